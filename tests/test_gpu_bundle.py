"""bench/gpu_bundle.py's own logic on hand-made wheels (no network): what is trimmed, what is bundled, what is
missing. The real bundle (downloads from PyPI) is built by `make gpu-bundle`, which checks itself."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_bundle  # noqa: E402


def make_wheel(directory: Path, name: str, requires: list[str] = (), files: dict[str, bytes] | None = None) -> Path:
    wheel = directory / f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
    info = f"{name.replace('-', '_')}-1.0.dist-info"
    files = dict(files or {f"{name.replace('-', '_')}/__init__.py": b""})
    files[f"{info}/METADATA"] = ("Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    record = "".join(f"{f},sha256=x,{len(b)}\n" for f, b in files.items()) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for f, b in files.items():
            z.writestr(f, b)
        z.writestr(f"{info}/RECORD", record)
    return wheel


def test_trimming_drops_the_members_and_their_record_lines(tmp_path):
    wheel = make_wheel(tmp_path, "ray", files={"ray/__init__.py": b"x", "ray/jars/big.jar": b"j" * 1000,
                                               "ray/tune/__init__.py": b""})
    out = tmp_path / "out"
    out.mkdir()
    trimmed = gpu_bundle.trimmed(wheel, out, lambda f: f.startswith(gpu_bundle.TRIM["ray"]))
    with zipfile.ZipFile(trimmed) as z:
        names = set(z.namelist())
        record = z.read("ray-1.0.dist-info/RECORD").decode()
    assert "ray/jars/big.jar" not in names and "ray/jars/big.jar" not in record
    assert {"ray/__init__.py", "ray/tune/__init__.py"} <= names and "ray/tune/__init__.py" in record


def test_the_closure_leaves_out_the_image_and_what_only_unloaded_packages_need(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_bundle, "NEEDED", ["ray[tune]", "mlflow-skinny"])
    monkeypatch.setattr(gpu_bundle, "NOT_LOADED", {"databricks-sdk": "never imported"})
    make_wheel(tmp_path, "ray", ["numpy", "msgpack", 'pyarrow; extra == "tune"', 'gymnasium; extra == "rllib"',
                                 'colorama; sys_platform == "win32"'])
    make_wheel(tmp_path, "mlflow-skinny", ["databricks-sdk", "sqlalchemy"])
    make_wheel(tmp_path, "databricks-sdk", ["google-auth"])
    make_wheel(tmp_path, "google-auth", [])
    make_wheel(tmp_path, "msgpack", [])
    make_wheel(tmp_path, "bitsandbytes", ["torch"])
    taken, problems = gpu_bundle.needed_wheels(tmp_path, "3.12")
    # numpy and pyarrow: the image has them; gymnasium (an extra not asked for) and colorama (Windows): not needed;
    # databricks-sdk is never loaded, and google-auth only it needs
    assert set(taken) == {"ray", "mlflow-skinny", "msgpack", "bitsandbytes"}
    assert problems == ["no wheel for sqlalchemy, which a bundled package needs and the image lacks"]
