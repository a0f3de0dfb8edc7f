"""The table the search benchmarks score from: every point of a coarse grid measured once by a real peftsweep sweep.

Each row keeps what a searcher would have seen at every epoch (the validation accuracy logged per epoch) and what the
trial had spent by then (worker-seconds: the trial's Train job from its start to that epoch's result, workers x
seconds), so a benchmark can replay early stopping: a trial stopped after epoch k costs what the real one had spent
at epoch k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from common import fresh_ray, run_sweep_config


@dataclass
class GridRow:
    method: str
    hparams: dict
    accuracy: float  # validation accuracy after the last epoch
    cost: float  # trainable %
    history: list[float] = field(default_factory=list)  # validation accuracy after epoch 1, 2, ...
    seconds: list[float] = field(default_factory=list)  # worker-seconds spent by the end of epoch 1, 2, ...

    @property
    def worker_seconds(self) -> float:
        return self.seconds[-1]


def grid_config(model: str, data: dict, methods: dict, points: int, train: dict, out: Path) -> dict:
    return {"name": "search-grid", "model": model, "data": data, "output_dir": str(out), "methods": methods,
            "train": train, "search": {"algorithm": "grid", "grid_points": points, "max_concurrent_trials": 2},
            "resources": {"num_workers": 1, "cpus_per_worker": 1}}


def grid_table(config: dict, reuse: bool = False) -> list[GridRow]:
    """Measure every grid point for real (or, with `reuse`, read the grid sweep already in the config's output
    directory); one row per completed trial, in the order the trials started."""
    from peftsweep.search.tracking.client import client_for, latest_sweep

    if not reuse:
        fresh_ray()
        run_sweep_config(config)
    client = client_for(f"sqlite:///{Path(config['output_dir']) / 'mlflow.db'}")
    return rows_of(client, *latest_sweep(client, config["name"]))


def grid_floor(config: dict) -> float:
    """The grid sweep's floor (its validation accuracy with nothing trained; 0 when it logged none): the reference
    accuracy of every hypervolume the benchmarks compute from this table."""
    from peftsweep.search.results.records import floor_accuracy
    from peftsweep.search.tracking.runs import logged_floor
    from peftsweep.search.tracking.client import client_for, latest_sweep

    client = client_for(f"sqlite:///{Path(config['output_dir']) / 'mlflow.db'}")
    return floor_accuracy(logged_floor(client, latest_sweep(client, config["name"])[1]))


def rows_of(client, experiment_id: str, parent_run_id: str) -> list[GridRow]:
    from peftsweep.dashboards.sweep_data import hyperparameters
    from peftsweep.metric_names import QUALITY
    from peftsweep.search.tracking.runs import load_records

    rows = []
    for record in load_records(client, experiment_id, parent_run_id):
        if record.status != "completed":
            continue
        run = client.get_run(record.run_id)
        history = sorted(client.get_metric_history(record.run_id, QUALITY), key=lambda m: m.step)
        total = record.worker_seconds
        if not history or not math.isfinite(total):
            raise SystemExit(f"grid run {record.run_id} has no per-epoch validation accuracy or worker_seconds: "
                             "re-measure the grid (without --reuse-grid)")
        # The trial's spend at each epoch's result: the total less the share of wall time after that result (one
        # worker per grid trial, so worker-seconds are wall seconds of the Train job).
        end = history[-1].timestamp
        workers = total / max(1e-9, run.data.metrics.get("wall_seconds", total))
        seconds = [max(0.0, total - workers * (end - m.timestamp) / 1000) for m in history]
        rows.append((run.info.start_time, GridRow(record.method, hyperparameters(record), record.val_accuracy,
                                                  record.trainable_pct, [m.value for m in history], seconds)))
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def snap(method: str, hparams: dict, rows: list[GridRow], specs: dict) -> GridRow:
    """The grid row of the same method nearest to a sampled point (each parameter on its own scale)."""
    from peftsweep.spaces import ChoiceParam

    def distance(row: GridRow) -> float:
        total = 0.0
        for key, param in specs[method].params.items():
            if key not in hparams or key not in row.hparams:
                continue
            a, b = hparams[key], row.hparams[key]
            if isinstance(param, ChoiceParam) or not isinstance(a, (int, float)) or isinstance(a, bool):
                total += a != b
            elif param.log:
                total += abs(math.log(a) - math.log(b)) / max(1e-12, math.log(param.high / param.low))
            else:
                total += abs(a - b) / max(1e-12, param.high - param.low)
        return total
    return min((r for r in rows if r.method == method), key=distance)
