"""A sweep's trials as records (one per MLflow child run: search.tracking.runs reads them), and its floor."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peftsweep.metric_names import (CHECKPOINT_MB, FORGETTING, GPU_SECONDS, PEAK_MEMORY_MB, STORED_PARAMS, TEST_ACCURACY,
                                    TEST_MACRO_F1, TEST_MCC, TOKENS_PER_SECOND, TRAINABLE_PARAMS, TRAINABLE_PCT,
                                    TRAIN_SECONDS, VAL_ACCURACY, VAL_MACRO_F1, VAL_MCC, WORKER_SECONDS)
from peftsweep.search.results.objectives import Objectives
from peftsweep.trainers.faults import is_infrastructure_failure

SEARCH, CONFIRM = "search", "confirm"  # the stages of a sweep: the search, then the confirm runs

# The metrics a record holds (its float fields of the same names)
RECORD_METRICS = (VAL_ACCURACY, TEST_ACCURACY, VAL_MACRO_F1, TEST_MACRO_F1, VAL_MCC, TEST_MCC, TRAINABLE_PCT, TRAINABLE_PARAMS, STORED_PARAMS, TRAIN_SECONDS,
                  PEAK_MEMORY_MB, WORKER_SECONDS, GPU_SECONDS, CHECKPOINT_MB, TOKENS_PER_SECOND, FORGETTING)


@dataclass
class TrialRecord:
    run_id: str
    trial_id: str
    method: str
    status: str  # completed | early_stopped | failed | interrupted | running | not_run (over a budget by the plan)
    params: dict[str, str]
    val_accuracy: float = math.nan
    test_accuracy: float = math.nan
    val_macro_f1: float = math.nan  # classification's other qualities (`metric:`)
    test_macro_f1: float = math.nan
    val_mcc: float = math.nan
    test_mcc: float = math.nan
    trainable_pct: float = math.nan
    trainable_params: float = math.nan
    stored_params: float = math.nan
    train_seconds: float = math.nan
    peak_memory_mb: float = math.nan
    worker_seconds: float = math.nan  # the compute the trial's Train job held: workers x wall seconds
    gpu_seconds: float = math.nan  # likewise in GPUs, when it had any
    checkpoint_mb: float = math.nan  # what the method ships (adapter or weights), on disk
    tokens_per_second: float = math.nan
    forgetting: float = math.nan  # generation with `forgetting:`: general-text loss minus the base's
    benchmarks: dict[str, float] = field(default_factory=dict)  # `evaluate.lm_eval`: lm_eval/<task>/<metric>
    on_front: bool = False
    stage: str = SEARCH  # search | confirm (a re-training of a search trial's configuration with a new seed)
    config_id: str = ""  # the search trial whose configuration this run trained (a search run: its own trial id)
    seed: int | None = None  # confirm runs: the training seed (search runs train with train.seed)
    failure: str = ""  # why it failed (a failed run), as recorded on the run
    over_budget: str = ""  # the budgets it broke (`constraints:`), e.g. "peak_memory_mb 2345 > 2000"; "": none
    start_time: int = 0  # when its MLflow run started (ms since the epoch)

    def __post_init__(self) -> None:
        self.config_id = self.config_id or self.trial_id

    @property
    def failed_in_training(self) -> bool:
        """Failed, and not because it lost its process, node or placement (trainers.faults): the configuration's
        own training failed (a NaN loss, out of memory, an error in training)."""
        return self.status == "failed" and not is_infrastructure_failure(self.failure)


@dataclass(frozen=True)
class Floor:
    """The quality with nothing trained (0 trainable parameters): the majority class for classification, the base
    model's own zero-shot answers for generation. A point of the plane: a trial that does not beat it is dominated.
    `scores`: its value of every quality metric it was measured in (val_accuracy, test_mcc, ...)."""

    kind: str  # "majority class" | "zero-shot"
    val_accuracy: float
    test_accuracy: float
    scores: tuple[tuple[str, float], ...] = ()

    def value(self, metric: str) -> float:
        """The floor of `metric` (e.g. val_mcc); NaN when it was not measured in it (a sweep from before)."""
        return dict(self.scores).get(metric, {VAL_ACCURACY: self.val_accuracy, TEST_ACCURACY: self.test_accuracy}.get(
            metric, math.nan))


def floor_accuracy(floor: Floor | None, metric: str = VAL_ACCURACY) -> float:
    """The quality the hypervolume is measured from: the floor's validation value of it, 0 without a floor."""
    if floor is None:
        return 0.0
    value = floor.value(metric)
    return value if math.isfinite(value) else 0.0


def beats_floor(value: float, floor: Floor | None, metric: str = VAL_ACCURACY) -> bool:
    """Above the floor's value of `metric`; True without a floor, or a floor not measured in it (a sweep from
    before the metric was logged)."""
    least = floor.value(metric) if floor is not None else math.nan
    return not math.isfinite(least) or value > least


def is_front_candidate(record: TrialRecord, objectives: Objectives = Objectives()) -> bool:
    """Trials that trained to the end (an early-stopped trial's partial accuracy is not comparable), were measured in
    every objective and kept every budget."""
    over = bool(objectives.budgets and record.over_budget)  # objectives without budgets: none to break
    return record.status == "completed" and objectives.point(record.run_id, record).usable and not over


def best_of(records: list[TrialRecord], objectives: Objectives = Objectives()) -> TrialRecord | None:
    """The most accurate front candidate (the cheaper in trainable % of equals)."""
    ranked = sorted((r for r in records if is_front_candidate(r, objectives)),
                    key=lambda r: (-objectives.score(r), r.trainable_pct))
    return ranked[0] if ranked else None


def of_stage(records: list[TrialRecord], stage: str) -> list[TrialRecord]:
    return [r for r in records if r.stage == stage]


