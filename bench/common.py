"""Shared by the benchmarks: run a sweep from a config dict, measure its wall clock and how busy the CPUs were."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peftsweep import console  # noqa: E402
from peftsweep.environment import apply_defaults  # noqa: E402

apply_defaults()  # the settings every entry point runs with
console.install()

# What each benchmark trains: method choices are data (bench/workloads.yaml), as in configs/; the code names none.
WORKLOADS = yaml.safe_load((Path(__file__).parent / "workloads.yaml").read_text())

# The demo task, smaller: short trials, so a benchmark sees many of them.
SHORT_TASK = {"preset": "trec6", "train_size": 200, "validation_size": 200, "test_size": 200}
REAL_MODEL = "all-MiniLM-L6-v2"


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass
class SweepRun:
    outcome: object  # search.orchestration.sweep.SweepOutcome
    wall_seconds: float
    busy_fraction: float  # CPU time used / CPU time available over the sweep, whole machine
    records: list  # search.results.records.TrialRecord, one per trial


def run_sweep_config(config: dict) -> SweepRun:
    """Validate, then run; the wall clock covers Tune start to summary (validation and tokenizing excluded)."""
    from peftsweep.search.config import SweepConfig
    from peftsweep.search.plan import build_plan
    from peftsweep.search.orchestration.sweep import run_sweep

    plan = build_plan(SweepConfig.model_validate(config))
    busy0, total0 = cpu_times()
    start = time.time()
    outcome = run_sweep(plan)
    wall = time.time() - start
    busy1, total1 = cpu_times()
    return SweepRun(outcome, wall, (busy1 - busy0) / max(1.0, total1 - total0), outcome.summary.trials)


def tiny_assets(directory: Path, n: int = 200) -> tuple[str, dict]:
    """A tiny BERT and `n` rows of toy data for --quick runs (prove a script works; no timing claims)."""
    from tests.tiny import make_csv, make_model_dir

    model = make_model_dir(directory / "tiny-bert")
    csv = make_csv(directory / "toy.csv", n=n)
    return str(model), {"train_file": str(csv), "max_length": 16}


def fresh_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
