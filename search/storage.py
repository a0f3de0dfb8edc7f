"""Where Ray keeps a sweep's state and its trials' checkpoints: a local path, a path every node mounts, or a URI.

Ray Train writes checkpoints from the workers straight to `storage`, so on a cluster every node must reach it: a
shared mount (NFS) at the same path on every node, or an object store URI (`s3://bucket/prefix`, `gs://...`; extra
pyarrow options go in the query string, e.g. `?endpoint_override=minio:9000&scheme=http`). URIs are handled as
strings here: `pathlib` would fold `s3://` into `s3:/`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


def is_uri(location: str) -> bool:
    return "://" in location


def join(base: str, *parts: str) -> str:
    """`base/part/...`, keeping a URI's query string (pyarrow options) at the end."""
    path, sep, query = base.partition("?")
    joined = "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])
    return joined + sep + query


def name_of(location: str) -> str:
    return location.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


def parent_of(location: str) -> str:
    path, sep, query = location.partition("?")
    return path.rstrip("/").rsplit("/", 1)[0] + sep + query


def resolve(storage: str | None, output_path: Path) -> str:
    """The sweep's storage root: `storage` as written (a URI), made absolute (a path), or the output directory."""
    if storage is None:
        return str(output_path)
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def uri_for(path: str, root: str) -> str:
    """A path Ray reports (a checkpoint's `path`: for object stores, without the scheme) as a full location under
    the storage root it came from."""
    if not is_uri(root) or is_uri(path):
        return path
    scheme = root.split("://", 1)[0]
    query = root.partition("?")[2]
    path = path if scheme == "file" else path.lstrip("/")  # file:///abs/path keeps its root
    return f"{scheme}://{path}" + (f"?{query}" if query else "")


@contextlib.contextmanager
def local_copy(location: str, only: list[str] | None = None) -> Iterator[Path]:
    """A local directory with the contents of directory `location` (or just the files named in `only`): the
    directory itself when it is local, else a temporary download."""
    if not is_uri(location):
        yield Path(location)
        return
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    with tempfile.TemporaryDirectory(prefix="peftsweep-") as tmp:
        if only is None:
            pyarrow.fs.copy_files(path, tmp, source_filesystem=fs)
        for name in only or []:
            pyarrow.fs.copy_files(f"{path}/{name}", f"{tmp}/{name}", source_filesystem=fs)
        yield Path(tmp)


def exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def delete_checkpoints(run_dir: str, keep: int = 0) -> int:
    """Delete the checkpoint_* directories of a Ray Train run but the newest `keep` (local path or a pyarrow
    filesystem URI); returns the bytes freed. Ray Train's own retention misses checkpoints written just before a
    driver was killed: a finished trial calls this to bound them anyway."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir)
    found = sorted((info for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
                    if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")),
                   key=lambda info: info.base_name)  # the names carry their timestamps
    size = 0
    for info in found[:max(0, len(found) - keep)]:
        files = fs.get_file_info(pyarrow.fs.FileSelector(info.path, recursive=True))
        size += sum(f.size or 0 for f in files if f.type == pyarrow.fs.FileType.File)
        fs.delete_dir(info.path)
    return size
