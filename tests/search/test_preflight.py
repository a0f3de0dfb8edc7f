"""One preflight for every command: `validate`, `run` and `train` refuse the same problems, before Ray starts.

bitsandbytes is made unimportable whether or not it is installed (a package of that name that raises on import is put
first on the path), so the "QLoRA without bitsandbytes" case is always tested, never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peftsweep.cli import main
from peftsweep.search.plan import capacity_problems, local_resources, method_problems
from peftsweep.trainers.config import Resources

ROOT = Path(__file__).resolve().parents[2]
HINT = "pip install 'peftsweep[qlora]'"


@pytest.fixture
def no_bitsandbytes(tmp_path) -> dict[str, str]:
    """An environment in which `import bitsandbytes` fails, as when it is not installed."""
    blocker = tmp_path / "blocked" / "bitsandbytes"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'bitsandbytes' (blocked by the test)\")\n")
    path = os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": path}


def peftsweep(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftsweep.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def sweep_config(tmp_path: Path, model: str, csv: str, **extra) -> Path:
    config = {"name": "pre", "model": model, "output_dir": str(tmp_path / "out"),
              "data": {"train_file": csv, "max_length": 16}, "methods": ["lora", "qlora"]} | extra
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_command_refuses_qlora_without_bitsandbytes(tmp_path, tiny_model, tiny_csv, no_bitsandbytes):
    config = sweep_config(tmp_path, tiny_model, tiny_csv)
    for command in (["validate", str(config)], ["run", str(config)]):
        proc = peftsweep(command, no_bitsandbytes, tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"methods.qlora: QLoRA needs bitsandbytes: {HINT}" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written, Ray never started
    proc = peftsweep(["train", str(config), "--method", "qlora"], no_bitsandbytes, tmp_path)
    assert proc.returncode == 2 and f"qlora: QLoRA needs bitsandbytes: {HINT}" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the same sweep without QLoRA passes the same preflight
    proc = peftsweep(["validate", str(config), "--set", "methods=[lora]"], no_bitsandbytes, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_trial_larger_than_this_machine_is_refused_by_every_command(tmp_path, tiny_model, tiny_csv, capsys,
                                                                       monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = int(local_resources()["CPU"])
    config = sweep_config(tmp_path, tiny_model, tiny_csv, methods=["lora"],
                          resources={"num_workers": cpus + 1, "cpus_per_worker": 1})
    for command in (["validate", str(config)], ["run", str(config)]):
        assert main(command) == 2
        assert f"resources: a lora trial needs {cpus + 1} CPUs ({cpus + 1} workers x 1) but the Ray cluster has " \
               f"{cpus}" in capsys.readouterr().err
    assert main(["train", str(config), "--method", "lora"]) == 2
    assert f"a lora trial needs {cpus + 1} CPUs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_method_problems_come_together():
    problems = method_problems("lora", {"r": 0, "rank": 4, "alpha_multiple": 2, "dropout": 0.0, "lr": 1e-3}, None)
    assert "lora.r: must be >= 1, got 0" in problems and any("lora.rank: unknown" in p for p in problems)
    assert method_problems("lorra", {}, None)[0].startswith("method: unknown method 'lorra'")


def test_capacity_counts_gpus_too():
    needs = {"full": Resources(num_workers=2, cpus_per_worker=1, gpus_per_worker=1)}
    assert capacity_problems(needs, {"CPU": 8, "GPU": 2}) == []
    assert capacity_problems(needs, {"CPU": 8, "GPU": 1}) == [
        "resources: a full trial needs 2 GPUs but the Ray cluster has 1"]
