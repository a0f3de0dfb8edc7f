"""A sweep's trials as records read from MLflow (one per child run), and the floor its parent run logged."""

from __future__ import annotations

import math
from dataclasses import dataclass

from peftsweep.search.tracking import (CONFIG_TAG, FAILURE_TAG, METHOD_TAG, SEARCH, SEED_TAG, STAGE_TAG, STATUS_TAG,
                                       TRIAL_TAG, trial_runs)
from peftsweep.trainers.faults import is_infrastructure_failure

RECORD_METRICS = ("val_accuracy", "test_accuracy", "trainable_pct", "trainable_params", "stored_params",
                  "train_seconds", "peak_memory_mb", "worker_seconds", "gpu_seconds")


@dataclass
class TrialRecord:
    run_id: str
    trial_id: str
    method: str
    status: str  # completed | early_stopped | failed | interrupted | running
    params: dict[str, str]
    val_accuracy: float = math.nan
    test_accuracy: float = math.nan
    trainable_pct: float = math.nan
    trainable_params: float = math.nan
    stored_params: float = math.nan
    train_seconds: float = math.nan
    peak_memory_mb: float = math.nan
    worker_seconds: float = math.nan  # the compute the trial's Train job held: workers x wall seconds
    gpu_seconds: float = math.nan  # likewise in GPUs, when it had any
    on_front: bool = False
    stage: str = SEARCH  # search | confirm (a re-training of a search trial's configuration with a new seed)
    config_id: str = ""  # the search trial whose configuration this run trained (a search run: its own trial id)
    seed: int | None = None  # confirm runs: the training seed (search runs train with train.seed)
    failure: str = ""  # why it failed (a failed run), as recorded on the run

    def __post_init__(self) -> None:
        self.config_id = self.config_id or self.trial_id

    @property
    def failed_in_training(self) -> bool:
        """Failed, and not because it lost its process, node or placement (trainers.faults): the configuration's
        own training failed (a NaN loss, out of memory, an error in training)."""
        return self.status == "failed" and not is_infrastructure_failure(self.failure)


@dataclass(frozen=True)
class Floor:
    """The accuracy with nothing trained (0 trainable parameters): the majority class for classification, the base
    model's own zero-shot answers for generation. A point of the plane: a trial that does not beat it is dominated."""

    kind: str  # "majority class" | "zero-shot"
    val_accuracy: float
    test_accuracy: float


FLOOR_TAG = "peftsweep.floor"  # on the parent run: what the floor is (Floor.kind)
FLOOR_METRICS = ("floor_val_accuracy", "floor_test_accuracy")  # on the parent run


def logged_floor(client, parent_run_id: str) -> Floor | None:
    """The floor a sweep logged on its parent run (for a resumed sweep, the dashboard), if it did."""
    run = client.get_run(parent_run_id)
    metrics, kind = run.data.metrics, run.data.tags.get(FLOOR_TAG)
    if kind is None or not all(k in metrics for k in FLOOR_METRICS):
        return None
    return Floor(kind, metrics[FLOOR_METRICS[0]], metrics[FLOOR_METRICS[1]])


def floor_accuracy(floor: Floor | None) -> float:
    """The accuracy the hypervolume is measured from: the floor's validation accuracy, 0 without a floor."""
    return floor.val_accuracy if floor is not None else 0.0


def logged_rules(client, parent_run_id: str):
    """The verdict rules the sweep was configured with (its confirm.* params; the defaults for what it did not log)."""
    from peftsweep.search.confirmation import VerdictRules

    params, default = client.get_run(parent_run_id).data.params, VerdictRules()

    def number(key: str, fallback: float, kind=float):
        try:
            return kind(params[key]) if key in params else fallback
        except ValueError:
            return fallback
    failed = params.get("confirm_failed_runs", default.failed_runs)
    return VerdictRules(confidence=number("confirm_confidence", default.confidence),
                        margin=number("confirm_margin", default.margin),
                        failed_runs=failed if failed in ("withhold", "floor") else default.failed_runs,
                        looks=number("confirm_looks", default.looks, int))


def record_from_run(run) -> TrialRecord:
    metrics, tags = run.data.metrics, run.data.tags
    status = tags.get(STATUS_TAG) or ("failed" if run.info.status == "FAILED" else "running")
    trial_id = tags.get(TRIAL_TAG, "")
    seed = tags.get(SEED_TAG)
    return TrialRecord(run_id=run.info.run_id, trial_id=trial_id, method=tags.get(METHOD_TAG, "?"),
                       status=status, params=dict(run.data.params),
                       **{k: float(metrics.get(k, math.nan)) for k in RECORD_METRICS},
                       stage=tags.get(STAGE_TAG, SEARCH), config_id=tags.get(CONFIG_TAG, trial_id),
                       seed=int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
                       failure=tags.get(FAILURE_TAG, ""))


def is_front_candidate(record: TrialRecord) -> bool:
    """Only trials that trained to the end: an early-stopped trial's partial accuracy is not comparable."""
    return record.status == "completed" and math.isfinite(record.val_accuracy) and math.isfinite(record.trainable_pct)


def best_of(records: list[TrialRecord]) -> TrialRecord | None:
    ranked = sorted((r for r in records if is_front_candidate(r)), key=lambda r: (-r.val_accuracy, r.trainable_pct))
    return ranked[0] if ranked else None


def load_records(client, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """Every child run of the sweep, of both stages."""
    return [record_from_run(run) for run in trial_runs(client, experiment_id, parent_run_id)]


def of_stage(records: list[TrialRecord], stage: str) -> list[TrialRecord]:
    return [r for r in records if r.stage == stage]


