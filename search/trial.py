"""The Tune trial: turns one sampled point of the space into a Ray Train job (Train V2 pattern).

It runs in a Tune trial process that holds no CPU (only a little memory): the CPUs belong to the Train workers, so a
2-worker trial fits on a 2-core laptop.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.train import TrainingFailedError
from ray.tune.integration.ray_train import TuneReportCallback

from search.space import unflat
from search.storage import delete_checkpoints
from trainers.config import TrialConfig
from trainers.faults import describe, recorded_failure
from trainers.launch import make_trainer, run_dir_of

# The trial driver only waits on the Train controller: it needs no CPU, and `memory` exists on every Ray node.
DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


def sweep_trial(config: dict[str, Any], *, data: dict[str, Any], settings: dict[str, Any]) -> None:
    """`settings` is the sweep-wide part of a TrialConfig (model, labels, training, per-method resources);
    `data["tokenized"]` the object-store reference of the tokenized data, handed on to the workers unresolved."""
    method, hparams = unflat(config)
    trial = TrialConfig.model_validate(
        {k: v for k, v in settings.items() if k not in ("resources_by_method", "storage_path")}
        | {"method": method, "hparams": hparams, "resources": settings["resources_by_method"][method]})
    name = tune.get_context().get_trial_name()
    run_dir = run_dir_of(settings["storage_path"], name)
    if (reason := recorded_failure(run_dir)) is None:  # a resumed sweep does not retry a NaN trial
        trainer = make_trainer(trial, data["tokenized"], storage_path=settings["storage_path"], name=name,
                               callbacks=[TuneReportCallback()])
        try:
            trainer.fit()
        except TrainingFailedError as exc:
            # One line for MLflow's failure_reason and the progress printer, not Ray's nested tracebacks.
            raise TrialFailedError(failure_reason(exc)) from None
        reason = recorded_failure(run_dir)  # NaN loss: the workers stopped together, without an error
        delete_checkpoints(run_dir, keep=trial.train.checkpoints_to_keep)
    if reason is not None:
        raise TrialFailedError(reason)


class TrialFailedError(RuntimeError):
    """A trial's Ray Train job failed for good (after its restarts); the message is the reason, on one line."""


def failure_reason(exc: TrainingFailedError) -> str:
    failures = getattr(exc, "worker_failures", None) or {}
    if not failures:
        return describe(exc)
    rank, error = min(failures.items())
    error = getattr(error, "_base_exc", error)  # Ray wraps a worker's exception with its traceback text
    return f"rank {rank}: {describe(error)}"
