"""Every metric a trial reports and a sweep logs, written once: its name, which way is better, when it is reported, and
what it means. The trial's workers (trainers.recipe) and the sweep's driver (the MLflow logger, the records, the saved
views, the searcher and the schedulers) import these names; the objectives a front is over are chosen from them.

Like `errors` and `task_names`, every layer may import this module: it imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["max", "min"]


@dataclass(frozen=True)
class MetricSpec:
    """name: as logged to MLflow and reported to Tune. better: the direction that is better (None: neither, e.g. a
    count or a diagnostic). when: `epoch` (reported after every epoch and logged as a series, its last value the final
    one), `final` (logged once when the trial ends). by: `trial` (reported by the trial's workers) or `driver`
    (computed by the sweep's driver from the trial's reports)."""

    name: str
    better: Better | None
    when: Literal["epoch", "final"]
    by: Literal["trial", "driver"]
    summary: str


def _metrics(*rows: tuple) -> dict[str, MetricSpec]:
    return {row[0]: MetricSpec(*row) for row in rows}


# The names, as logged and reported
VAL_ACCURACY = "val_accuracy"
VAL_MACRO_F1 = "val_macro_f1"
VAL_MCC = "val_mcc"
VAL_LOSS = "val_loss"
TRAIN_LOSS = "train_loss"
TEST_ACCURACY = "test_accuracy"
TEST_MACRO_F1 = "test_macro_f1"
TEST_MCC = "test_mcc"
TEST_LOSS = "test_loss"
EVAL_SAMPLES_PER_SECOND = "eval_samples_per_second"
GENERATION_SAMPLES_PER_SECOND = "generation_samples_per_second"
TRAINABLE_PARAMS = "trainable_params"
TRAINABLE_PCT = "trainable_pct"
STORED_PARAMS = "stored_params"
STORED_PCT = "stored_pct"
HEAD_PARAMS = "head_params"
BASE_PARAMS = "base_params"
TRAIN_SECONDS = "train_seconds"
SAMPLES_PER_SECOND = "samples_per_second"
PEAK_MEMORY_MB = "peak_memory_mb"
PEAK_RESERVED_MB = "peak_reserved_mb"
CHECKPOINT_MB = "checkpoint_mb"
TOKENS_PER_SECOND = "tokens_per_second"
PLANNED_MIN_MEMORY_MB = "planned_min_memory_mb"
DDP_PARAM_DIVERGENCE = "ddp_param_divergence"
RESTARTS = "restarts"
NUM_NODES = "num_nodes"
WALL_SECONDS = "wall_seconds"
STARTUP_SECONDS = "startup_seconds"
WORKER_SECONDS = "worker_seconds"
GPU_SECONDS = "gpu_seconds"
EPOCHS_COMPLETED = "epochs_completed"
LOG10_TRAINABLE_PCT = "log10_trainable_pct"
# `evaluate.lm_eval`: lm-evaluation-harness's scores, one metric per task and score (trainers.benchmarks):
# lm_eval/<task>/<metric>, logged to the runs of the front's configurations (the base model's to the parent run)
BENCHMARK_PREFIX = "lm_eval/"
FORGETTING = "forgetting"
GENERAL_LOSS = "general_loss"
BASE_GENERAL_LOSS = "base_general_loss"

METRICS: dict[str, MetricSpec] = _metrics(
    (VAL_ACCURACY, "max", "epoch", "trial", "accuracy on the validation split (classification: of the label; "
                                            "generation: exact match of the answer)"),
    (VAL_MACRO_F1, "max", "epoch", "trial", "classification: macro-F1 on the validation split"),
    (VAL_MCC, "max", "epoch", "trial", "classification: Matthews correlation coefficient (multiclass) on the "
                                       "validation split"),
    (VAL_LOSS, "min", "epoch", "trial", "generation: mean per-token loss of the answers on the validation split"),
    (TRAIN_LOSS, "min", "epoch", "trial", "mean training loss of the epoch, over the ranks"),
    (FORGETTING, "min", "epoch", "trial", "generation with `forgetting:`: the model's mean per-token loss on the "
                                          "general text minus its base model's (> 0: it got worse at text it was not "
                                          "trained on)"),
    (GENERAL_LOSS, "min", "epoch", "trial", "generation with `forgetting:`: the model's mean per-token loss on the "
                                            "general text"),
    (BASE_GENERAL_LOSS, None, "final", "trial", "generation with `forgetting:`: the base model's mean per-token loss "
                                                "on the general text (PEFT: its adapter disabled), measured before the "
                                                "first step"),
    (TEST_ACCURACY, "max", "final", "trial", "accuracy on the test split, measured once at the end (never searched)"),
    (TEST_MACRO_F1, "max", "final", "trial", "classification: macro-F1 on the test split"),
    (TEST_MCC, "max", "final", "trial", "classification: Matthews correlation coefficient on the test split"),
    (TEST_LOSS, "min", "final", "trial", "generation: mean per-token answer loss on the test split"),
    (EVAL_SAMPLES_PER_SECOND, "max", "final", "trial", "validation examples evaluated per second"),
    (GENERATION_SAMPLES_PER_SECOND, "max", "final", "trial", "generation: validation answers generated per second"),
    (TRAINABLE_PARAMS, "min", "final", "trial", "parameters the method trains"),
    (TRAINABLE_PCT, "min", "final", "trial", "trainable parameters as % of the base model's"),
    (STORED_PARAMS, "min", "final", "trial", "parameters the method's checkpoint stores (what inference needs)"),
    (STORED_PCT, "min", "final", "trial", "stored parameters as % of the base model's"),
    (HEAD_PARAMS, None, "final", "trial", "parameters of the task head (classification)"),
    (BASE_PARAMS, None, "final", "trial", "parameters of the pre-trained base model"),
    (TRAIN_SECONDS, "min", "final", "trial", "seconds spent in training steps (no evaluation, no start-up)"),
    (SAMPLES_PER_SECOND, "max", "final", "trial", "training examples per second of training steps"),
    (PEAK_MEMORY_MB, "min", "final", "trial", "peak memory the trial's tensors needed on the worst rank, MiB, from "
                                              "before its model is built to its end (GPU: torch's peak allocated; "
                                              "CPU: the process's peak resident memory above what it held at that "
                                              "start, freed heap returned first: the model, gradients, optimizer "
                                              "state, activations and batches, not the interpreter's libraries)"),
    (PEAK_RESERVED_MB, "min", "final", "trial", "GPU: torch's peak reserved memory on the worst rank, MiB (what the "
                                                "caching allocator held: the device memory the trial really took)"),
    (CHECKPOINT_MB, "min", "final", "trial", "size on disk of what the method ships, MiB: the adapter (PEFT) or the "
                                             "weights (full fine-tuning), with the task head; not the training state"),
    (PLANNED_MIN_MEMORY_MB, None, "final", "trial", "with a `constraints.peak_memory_mb` budget, a trial the memory "
                                                    "plan shows over it is not run: the least memory it would need, "
                                                    "MiB (parameters, gradients, optimizer state)"),
    (TOKENS_PER_SECOND, "max", "final", "trial", "training tokens (not padding) per second of training steps, all "
                                                 "ranks together"),
    (DDP_PARAM_DIVERGENCE, None, "final", "trial", "largest difference of a trainable value between DDP ranks "
                                                   "(0: the replicas stayed in sync)"),
    (RESTARTS, None, "final", "trial", "times the trial's workers were restarted from a checkpoint"),
    (NUM_NODES, None, "final", "trial", "Ray nodes the trial's workers ran on"),
    (WALL_SECONDS, "min", "final", "driver", "seconds the trial's Train job ran, over every driver that ran it"),
    (STARTUP_SECONDS, "min", "final", "driver", "seconds from the trial's start to its first training step"),
    (WORKER_SECONDS, "min", "final", "driver", "wall seconds times the trial's workers: the compute it held"),
    (GPU_SECONDS, "min", "final", "driver", "worker-seconds times each worker's GPUs, when it had any"),
    (EPOCHS_COMPLETED, None, "final", "driver", "epochs the trial trained (fewer when stopped early)"),
    (LOG10_TRAINABLE_PCT, "min", "final", "driver", "log10 of trainable % (MLflow's charts have no log axis)"),
)

# The front is over these by default (`objectives:` chooses others: search.results.objectives): the quality to
# maximize, then the cost to minimize.
DEFAULT_OBJECTIVES: tuple[MetricSpec, ...] = (METRICS[VAL_ACCURACY], METRICS[TRAINABLE_PCT])
QUALITY = VAL_ACCURACY  # the quality every sweep searches (its per-epoch series is the learning curve)

EPOCH_METRICS = tuple(m.name for m in METRICS.values() if m.when == "epoch")  # logged as a series per epoch
FINAL_METRICS = tuple(m.name for m in METRICS.values() if m.when == "final" and m.by == "trial")  # logged at the end


def split_scores(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    """A task kind's scores of one split ({"accuracy": ..., "macro_f1": ...}) as the metrics they are reported as
    (`val_accuracy`, ...), each of them declared here: a score with no declaration fails the trial's first report, in
    the tests, instead of going unlogged."""
    named = {f"{prefix}_{key}": value for key, value in scores.items()}
    if undeclared := [name for name in named if name not in METRICS]:
        raise KeyError(f"metrics {undeclared} are not declared in peftsweep.metric_names")
    return named
