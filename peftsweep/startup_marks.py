"""Where a trial's start-up goes: time marks written by each process a trial passes through, for bench/overhead.py's
breakdown (`--breakdown`).

Off unless the environment names a directory (`PEFTSWEEP_STARTUP_MARKS`): then each process appends one JSON line
per mark (what, when, its pid and rank) to a file of its own there. A mark costs a file append; off, an environment
lookup. The marks, in the order a trial reaches them:

- `tune_fit` (the sweep's driver): Tune is asked to run the sweep's trials (before it, once per sweep);
- `trial_start`, `trial_logged` (the sweep's driver): Tune tells its callbacks that the trial starts; the trial
  logger has its MLflow run;
- `trial_function` (the trial's process): Tune's function for the trial is running;
- `fit_called`: the trial asked Ray Train for its job (`TorchTrainer.fit()`), or began training in its own process;
- `controller_started` (Ray Train's controller actor), `worker_group_starting` (its placement group is asked for),
  `workers_created` (the placement group is ready and the worker processes are up), `workers_ready` (each worker's
  train context and the process group are set up), `training_launched` (the train function was sent to the workers);
- `process_created` (each worker process: when the OS started it; Ray may reuse a process it started earlier),
  `recipe_started` (the train function runs: its modules imported), `data_ready` (the tokenized data fetched from the
  object store), `model_ready` (the base loaded, the method applied, DDP wrapped), `first_step` (the first optimizer
  step done).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "PEFTSWEEP_STARTUP_MARKS"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def mark(what: str, at: float | None = None, rank: int | None = None) -> None:
    """Record that this process reached `what` (now, or at `at`, seconds since the epoch)."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    line = {"what": what, "at": time.time() if at is None else at, "pid": os.getpid(), "rank": rank}
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / f"{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def process_created_at() -> float:
    """When the OS started this process (seconds since the epoch)."""
    import psutil

    return psutil.Process().create_time()


def read_marks(directory: str | Path) -> dict[str, float]:
    """Each mark's latest time over the processes that wrote it (the slowest rank decides when a trial moves on)."""
    latest: dict[str, float] = {}
    for path in Path(directory).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            latest[record["what"]] = max(latest.get(record["what"], 0.0), record["at"])
    return latest
