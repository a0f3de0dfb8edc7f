"""Disk: delete the checkpoints of dominated trials once a sweep has finished, keeping the front's.

A trial's checkpoints live in two places: Ray Train's run directory (every `checkpoint_*` kept for resuming) and the
copy logged to MLflow (`checkpoint/` artifacts). Both go; the run itself, its metrics and parameters stay, tagged
`peftsweep.checkpoint_deleted`.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.storage import parent_of
from search.summary import Summary, is_front_candidate
from search.tracking import CHECKPOINT_TAG

DELETED_TAG = "peftsweep.checkpoint_deleted"


@dataclass
class Freed:
    trials: int = 0
    bytes: int = 0


def delete_dominated_checkpoints(client, summary: Summary) -> Freed:
    front = {r.run_id for r in summary.front}
    freed = Freed()
    for record in summary.trials:
        if record.run_id in front or not is_front_candidate(record):
            continue  # the front keeps its checkpoints; unfinished trials may still be resumed
        run = client.get_run(record.run_id)
        path = run.data.tags.get(CHECKPOINT_TAG)
        freed.bytes += _delete_ray_checkpoints(parent_of(path)) if path else 0
        freed.bytes += _delete_mlflow_checkpoint(client, run)
        client.set_tag(record.run_id, DELETED_TAG, "true")
        freed.trials += 1
    return freed


def prune_checkpoints(run_dir: str, keep: int) -> int:
    """Keep the newest `keep` checkpoints of a finished Ray Train run. Ray Train's own retention misses checkpoints
    written just before a driver was killed; this bounds them anyway. Returns the bytes freed."""
    return _delete_ray_checkpoints(run_dir, keep=keep)


def _delete_ray_checkpoints(run_dir: str, keep: int = 0) -> int:
    """checkpoint_* directories of a Ray Train run but the newest `keep` (local path or a pyarrow filesystem URI)."""
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


def _delete_mlflow_checkpoint(client, run) -> int:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    logged = client.list_artifacts(run.info.run_id, "checkpoint")
    if not logged:
        return 0
    get_artifact_repository(run.info.artifact_uri).delete_artifacts("checkpoint")
    return sum(a.file_size or 0 for a in logged)
