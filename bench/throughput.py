"""Throughput of a sweep of many short trials: trials per hour and how busy the machine's CPUs were.

Two layouts of the same sweep on the same cores:
  one trial at a time with 2 workers x 1 CPU   (search.max_concurrent_trials 1, resources.num_workers 2)
  two trials at a time with 1 worker x 1 CPU   (search.max_concurrent_trials 2, resources.num_workers 1)
A trial's fixed cost (starting its Train controller and workers, loading the model) leaves cores idle; packing two
1-worker trials onto the cores lets one trial's start-up overlap the other's training, and 1-worker trials train in
their Tune trial's process, which Tune reuses: the start-up of the first trials (new processes) and of the later
ones is shown apart.

    .venv/bin/python bench/throughput.py            # MiniLM-L6 + TREC-6 (200 train), 8 trials per layout
    .venv/bin/python bench/throughput.py --quick    # tiny BERT, 2 trials per layout: proves the script runs
    .venv/bin/python bench/throughput.py --layout "2 trials x 1 worker"   # one layout only (repeatable)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from common import REAL_MODEL, SHORT_TASK, WORKLOADS, fresh_ray, run_sweep_config, tiny_assets

LAYOUTS = {"1 trial x 2 workers": {"concurrent": 1, "workers": 2},
           "2 trials x 1 worker": {"concurrent": 2, "workers": 1}}


def sweep_config(model: str, data: dict, layout: dict, trials: int, out: Path) -> dict:
    return {"name": "throughput", "model": model, "data": data, "output_dir": str(out),
            "methods": WORKLOADS["throughput"]["methods"], "train": {"epochs": 1, "batch_size": 16},
            "search": {"algorithm": "random", "num_samples": trials, "seed": 0,
                       "max_concurrent_trials": layout["concurrent"]},
            "resources": {"num_workers": layout["workers"], "cpus_per_worker": 1}}


def measure(model: str, data: dict, trials: int, work: Path, layouts: list[str] | None = None) -> dict:
    rows = {}
    for name, layout in LAYOUTS.items():
        if layouts and name not in layouts:
            continue
        fresh_ray()
        run = run_sweep_config(sweep_config(model, data, layout, trials, work / name.replace(" ", "_")))
        done = [r for r in run.records if r.status == "completed"]
        train = sum(r.train_seconds for r in done if math.isfinite(r.train_seconds))
        first, later = startups(run, layout["concurrent"])
        rows[name] = {"trials": len(run.records), "completed": len(done), "wall_seconds": run.wall_seconds,
                      "trials_per_hour": 3600 * len(done) / run.wall_seconds, "cpu_busy": run.busy_fraction,
                      "train_seconds_sum": train, "startup_first": first, "startup_later": later}
    return rows


def startups(run, concurrent: int) -> tuple[float, float]:
    """Median `startup_seconds` (trial start to first training step, from MLflow) of the first `concurrent` trials
    (each in a new process) and of the later ones (a 1-worker trial's process is then one Tune reused)."""
    from statistics import median

    from mlflow.tracking import MlflowClient

    client = MlflowClient(run.outcome.tracking_uri)
    runs = sorted((client.get_run(r.run_id) for r in run.records), key=lambda r: r.info.start_time)
    values = [r.data.metrics.get("startup_seconds", math.nan) for r in runs]
    first, later = values[:concurrent], values[concurrent:]
    return median(first) if first else math.nan, median(later) if later else math.nan


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=None, help="trials per layout (default 8, quick 2)")
    parser.add_argument("--layout", action="append", choices=list(LAYOUTS), default=None,
                        help="measure this layout only (repeatable; default: both)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="peftsweep-throughput-"))
    model, data = tiny_assets(work) if args.quick else (REAL_MODEL, SHORT_TASK)
    rows = measure(model, data, args.trials or (2 if args.quick else 8), work, args.layout)
    print(f"\n{'layout':24}{'trials':>8}{'wall s':>9}{'trials/h':>10}{'CPU busy':>10}{'train s (sum)':>15}"
          f"{'start-up, first':>17}{'later':>7}")
    for name, r in rows.items():
        print(f"{name:24}{r['completed']:>8}{r['wall_seconds']:9.0f}{r['trials_per_hour']:10.0f}"
              f"{r['cpu_busy']:10.0%}{r['train_seconds_sum']:15.0f}{r['startup_first']:17.1f}"
              f"{r['startup_later']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
