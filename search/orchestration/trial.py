"""The Tune trial: trains one sampled point of the space.

A trial of several workers (or sharded) is a Ray Train job (Train V2 pattern), run from a Tune trial process that
holds no CPU (only a little memory): the CPUs belong to the Train workers, so a 2-worker trial fits on a 2-core
laptop. A trial of one worker trains in the Tune trial's own process, which then holds the worker's CPUs and GPUs
(`resources.in_process`; trainers.session): no controller, no worker processes, no process group, and Tune reuses the
process, its imports and its loaded libraries, for the next trial.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from ray import tune
from ray.train import TrainingFailedError
from ray.tune.integration.ray_train import TuneReportCallback

from peftsweep.metric_names import PLANNED_MIN_MEMORY_MB
from peftsweep.search.points import repeat_of, unflat
from peftsweep.search.results.objectives import COSTS, NOT_RUN, QUALITIES
from peftsweep.startup_marks import enabled as marking, mark
from peftsweep.search.storage import delete_checkpoints
from peftsweep.search.orchestration.ray_private import LeanTorchTrainer, StartupMarker
from peftsweep.search.orchestration.train_jobs import INTERRUPTED, JobOfTrial
from peftsweep.trainers.config import Resources, TrialConfig, TrialTemplate
from peftsweep.trainers.faults import (is_infrastructure_failure, record_reason, recorded_failure,
                                       training_failure)
from peftsweep.trainers.launch import InProcessTrainingError, make_trainer, run_dir_of, train_in_process

# A trial that is a Ray Train job only waits on its controller: it needs no CPU, and `memory` exists on every Ray node.
DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


def trial_resources(resources: Resources) -> dict[str, float]:
    """What Tune reserves for a trial's own process: the worker's CPUs and GPUs when it trains there."""
    if not resources.trains_in_process:
        return DRIVER_RESOURCES
    return {"CPU": resources.cpus_per_worker} | ({"GPU": resources.gpus_per_worker} if resources.use_gpu else {})


def resources_of_point(config: dict[str, Any], *, template: TrialTemplate):
    """Tune's resources for the trial of one sampled point (they depend on its method)."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    return resource_dict_to_pg_factory(trial_resources(template.resources_by_method[unflat(config)[0]]))


def sweep_trial(config: dict[str, Any], *, data: dict[str, Any], template: TrialTemplate, storage_path: str,
                memory_budget_mb: float | None = None) -> None:
    """`config`: the point Tune sampled; `template`: what every trial of the sweep shares; `data["tokenized"]`: the
    object-store reference of the tokenized data, handed on to the workers unresolved; `storage_path`: where the
    trials' Ray Train runs keep their checkpoints; `memory_budget_mb`: `constraints.peak_memory_mb`, if set."""
    mark("trial_function")
    repeat = repeat_of(config)  # a confirm run trains the configuration with its own seed
    trial = template.for_trial(*unflat(config), seed=repeat["seed"] if repeat else None)
    if memory_budget_mb is not None and _over_memory_budget(trial, memory_budget_mb):
        return
    context = tune.get_context()
    name = context.get_trial_name()
    run_dir = run_dir_of(storage_path, name)
    if (reason := recorded_failure(run_dir)) is None:  # a resumed sweep does not retry a NaN trial
        mark("fit_called")
        if trial.resources.trains_in_process:
            _train_here(trial, data["tokenized"], run_dir)
        else:
            _train_as_job(trial, data["tokenized"], context, storage_path, name)
        reason = recorded_failure(run_dir)  # NaN loss: the training stopped without an error
        delete_checkpoints(run_dir, keep=trial.train.checkpoints_to_keep)
    if reason is not None:
        raise TrialFailedError(reason)


def _over_memory_budget(trial: TrialConfig, budget_mb: float) -> bool:
    """Whether the memory plan shows the trial needs more than the budget; then its one report says so, and why."""
    from peftsweep.search.memory_check import planned_minimum_mb

    least = planned_minimum_mb(trial)
    if least <= budget_mb:
        return False
    # every objective a sweep may search is in the report (Tune checks that the searcher's are), unmeasured: NaN
    unmeasured = dict.fromkeys((*dict.fromkeys(QUALITIES.values()), *COSTS), math.nan)
    tune.report(unmeasured | {"epoch": 0, PLANNED_MIN_MEMORY_MB: least,
                              NOT_RUN: f"the memory plan needs at least {least:.0f} MiB per worker (parameters, "
                                       f"gradients, optimizer state) > constraints.peak_memory_mb {budget_mb:g}"})
    return True


def _train_here(trial: TrialConfig, data, run_dir: str) -> None:
    """One worker, in this process: each epoch's report goes straight to Tune."""
    try:
        train_in_process(trial, data, run_dir=run_dir, forward=tune.report)
    except InProcessTrainingError as exc:
        _fail(run_dir, str(exc))


def _train_as_job(trial: TrialConfig, data, context, storage_path: str, name: str) -> None:
    """A Ray Train job, which the sweep ends when the trial ends (search.orchestration.train_jobs)."""
    to_tune = TuneReportCallback()
    # The queue of reports to Tune is handed along so that a controller blocked on it can be unblocked.
    job = JobOfTrial(context.get_experiment_name(), context.get_trial_id(),
                     getattr(to_tune, "_training_actor_item_queue", None))
    trainer = make_trainer(trial, data, storage_path=storage_path, name=name, trainer=LeanTorchTrainer,
                           callbacks=[to_tune, job.callback, *([StartupMarker()] if marking() else [])])
    try:
        trainer.fit()
    except Exception as exc:
        outcome = job.outcome()
        if outcome == INTERRUPTED:  # Ctrl-C: stay unfinished (Tune removes this actor), to be resumed
            threading.Event().wait()
        if outcome is None and isinstance(exc, TrainingFailedError):
            # One line for MLflow's failure_reason and the progress printer, not Ray's nested tracebacks.
            _fail(run_dir_of(storage_path, name), training_failure(exc))
        if outcome is None:
            raise
        # stopped: its scheduler or the time budget ended the trial, then its job; Tune has what it reported
    finally:
        job.ended()


def _fail(run_dir: str, reason: str) -> None:
    """The trial failed for good: the training's own error is recorded (a resumed sweep would only repeat it); a lost
    process or node is not (a resume tries again)."""
    if not is_infrastructure_failure(reason):
        record_reason(run_dir, reason)
    raise TrialFailedError(reason) from None


class TrialFailedError(RuntimeError):
    """A trial failed for good (after its restarts); the message is the reason, on one line."""

