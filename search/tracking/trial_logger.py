"""The trial logger: a Tune callback in the sweep's driver process that creates, feeds and closes one MLflow child
run per trial. It runs in the driver, not inside the trial: one run per trial whatever the number of DDP workers, and a
trial that is stopped early or crashes still gets its run closed with a status and a reason.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from peftsweep.metric_names import (EPOCH_METRICS, EPOCHS_COMPLETED, FINAL_METRICS, GPU_SECONDS, LOG10_TRAINABLE_PCT,
                                    STARTUP_SECONDS, TRAINABLE_PCT, VAL_ACCURACY, WALL_SECONDS, WORKER_SECONDS)
from peftsweep.startup_marks import mark
from peftsweep.search import storage
from peftsweep.search.points import repeat_of, unflat
from peftsweep.search.results.objectives import NOT_RUN
from peftsweep.search.results.records import SEARCH
from peftsweep.search.tracking.client import (CHECKPOINT_TAG, CONFIG_TAG, FAILURE_TAG, METHOD_TAG, NODE_IPS_TAG,
                                              NODES_TAG, OVER_BUDGET_TAG, PLACE_TAGS, REPEATS_TAG, RETRIED_TAG,
                                              ROLE_TAG, SEED_TAG, STAGE_TAG, STATUS_TAG, TRIAL_TAG, client_for,
                                              trial_runs)

log = logging.getLogger(__name__)


def never() -> bool:
    return False


def trial_name(trial) -> str:
    """A trial's name in MLflow (its run name) and on the console: its method and Tune trial id; a confirm run's,
    its method, the search trial it repeats and its seed."""
    repeat = repeat_of(trial.config)
    if repeat:
        return f"{unflat(trial.config)[0]}-{repeat['config_id']}-seed{repeat['seed']}"
    return f"{unflat(trial.config)[0]}-{trial.trial_id}"


def finite_metrics(result: dict[str, Any], keys: tuple[str, ...], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(result[k]), now, step) for k in keys
            if isinstance(result.get(k), (int, float)) and math.isfinite(result[k])]


class MlflowTrialLogger(Callback):
    """Driver-side Tune callback: a child run per trial, per-epoch metrics, final metrics, checkpoint, status."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, planned_epochs: int,
                 trial_params: dict[str, Any], storage_root: str = "", stage: str = SEARCH,
                 interrupted: Callable[[], bool] | None = None):
        # whether the user interrupted the sweep (Ctrl-C): then the trials Tune calls ended did not end
        self.interrupted = interrupted or never
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.stage = stage  # this Tune run's stage: its runs are tagged with it, other stages' runs are not its own
        self.storage_root = storage_root  # Ray reports object-store checkpoint paths without their scheme
        self.planned_epochs = planned_epochs
        self.trial_params = trial_params  # sweep-wide training settings logged on every child
        self.run_ids: dict[str, str] = {}
        self.logged_epoch: dict[str, int] = {}  # run id -> last epoch logged (a restarted trial may report again)
        # A trial's job runs in segments, one per driver that ran it (a resumed sweep runs it again): the time the
        # sweep was down between two segments is not the trial's. run id -> when this driver started the trial;
        # run id -> the wall seconds its job ran under earlier drivers (the last `wall_seconds` they logged).
        self.segment_start: dict[str, float] = {}
        self.wall_before: dict[str, float] = {}
        self._client: MlflowClient | None = None

    # Tune saves this with its experiment state, so a resumed sweep's driver knows the runs it already made.
    def get_state(self) -> dict[str, Any]:
        return {"run_ids": dict(self.run_ids)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.run_ids.update(state.get("run_ids", {}))

    def __getstate__(self) -> dict[str, Any]:
        # the client is rebuilt where the callback is unpickled; segments belong to the driver that saw them
        return self.__dict__ | {"_client": None, "segment_start": {}, "wall_before": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    def run_id(self, trial) -> str:
        if trial.trial_id not in self.run_ids:
            self.run_ids[trial.trial_id] = self._find_or_create(trial)
        return self.run_ids[trial.trial_id]

    def _find_or_create(self, trial) -> str:
        query = f"tags.`{TRIAL_TAG}` = '{trial.trial_id}' and tags.mlflow.parentRunId = '{self.parent_run_id}'"
        found = [r for r in self.client.search_runs([self.experiment_id], filter_string=query, max_results=5)
                 if r.data.tags.get(STAGE_TAG, SEARCH) == self.stage]
        if found:  # a resumed trial continues its run
            if found[0].info.status == "KILLED":  # closed when the sweep was interrupted (Ctrl-C)
                self.client.update_run(found[0].info.run_id, status="RUNNING")
                self.client.set_tag(found[0].info.run_id, STATUS_TAG, "running")
            return found[0].info.run_id
        method, hparams = unflat(trial.config)
        repeat = repeat_of(trial.config)
        tags = {"mlflow.parentRunId": self.parent_run_id, ROLE_TAG: "trial", TRIAL_TAG: trial.trial_id,
                METHOD_TAG: method, STAGE_TAG: self.stage,
                CONFIG_TAG: repeat["config_id"] if repeat else trial.trial_id}
        if repeat:
            tags |= {SEED_TAG: str(repeat["seed"]), REPEATS_TAG: repeat["run_id"]}
        run = self.client.create_run(self.experiment_id, run_name=trial_name(trial), tags=tags)
        params = {"method": method} | hparams | self.trial_params
        if repeat:
            params |= {"seed": repeat["seed"], "selected_as": repeat["reasons"]}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        mark("trial_start")
        run_id = self.run_id(trial)
        self.segment_start[run_id] = time.time()
        self.wall_before[run_id] = self._last_wall(run_id)
        mark("trial_logged")

    def _last_wall(self, run_id: str) -> float:
        history = self.client.get_metric_history(run_id, WALL_SECONDS)
        return max(history, key=lambda m: (m.step, m.timestamp)).value if history else 0.0

    def _wall(self, run_id: str, result: dict[str, Any]) -> float | None:
        """Wall seconds the trial's job has run, over every driver that ran it, up to this result."""
        if run_id not in self.segment_start or not isinstance(result.get("reported_at"), float):
            return None
        return self.wall_before.get(run_id, 0.0) + max(0.0, result["reported_at"] - self.segment_start[run_id])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        run_id = self.run_id(trial)
        if run_id not in self.logged_epoch:  # first result this driver sees: maybe a resumed trial
            history = self.client.get_metric_history(run_id, VAL_ACCURACY)
            self.logged_epoch[run_id] = max((m.step for m in history), default=0)
        if epoch > self.logged_epoch[run_id]:
            metrics = finite_metrics(result, EPOCH_METRICS, epoch)
            if (wall := self._wall(run_id, result)) is not None:  # where a resumed driver's count continues
                metrics.append(Metric(WALL_SECONDS, wall, int(time.time() * 1000), epoch))
            self.client.log_batch(run_id, metrics=metrics)
            self.logged_epoch[run_id] = epoch

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        epochs = int(result.get("epoch", 0))
        if result.get(NOT_RUN):  # its budget could not be kept (the memory plan): never trained
            self.client.set_tag(self.run_id(trial), OVER_BUDGET_TAG, str(result[NOT_RUN])[:5000])
            self._finish(trial, result, "not_run", "FINISHED")
            return
        status = "completed" if epochs >= self.planned_epochs else "early_stopped"
        self._finish(trial, result, status, "FINISHED")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Tune tries the failed trial again (a confirm run: search.orchestration.confirm_stage): its run stays open, tagged."""
        self.client.set_tag(self.run_id(trial), RETRIED_TAG, trial_error_reason(trial)[:5000])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, trial.last_result or {}, "failed", "FAILED", reason=trial_error_reason(trial))

    def _finish(self, trial, result: dict[str, Any], status: str, mlflow_status: str, reason: str = "") -> None:
        run_id = self.run_id(trial)
        epochs = int(result.get("epoch", 0))
        metrics = finite_metrics(result, FINAL_METRICS, epochs)
        pct = result.get(TRAINABLE_PCT)
        if isinstance(pct, (int, float)) and 0 < pct < math.inf:  # MLflow's scatter charts have no log axis
            metrics.append(Metric(LOG10_TRAINABLE_PCT, math.log10(pct), int(time.time() * 1000), epochs))
        metrics.append(Metric(EPOCHS_COMPLETED, float(epochs), int(time.time() * 1000), epochs))
        metrics += self._timing(run_id, result, epochs)
        tags = [RunTag(STATUS_TAG, status)] + ([RunTag(FAILURE_TAG, reason[:5000])] if reason else [])
        tags += [RunTag(tag, str(result[key])) for tag, key in
                 ((NODES_TAG, "node_ids"), (NODE_IPS_TAG, "node_ips"), *PLACE_TAGS.items()) if result.get(key)]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        checkpoint = result.get("checkpoint_path")
        location = storage.uri_for(checkpoint, self.storage_root) if checkpoint else None
        if location and storage.exists(location):
            self.client.set_tag(run_id, CHECKPOINT_TAG, location)
            try:
                self._log_checkpoint(run_id, location, unflat(trial.config)[0])
            except Exception as exc:  # an upload hiccup must not end the sweep: the checkpoint stays in storage
                log.warning(f"{trial}: checkpoint not logged to MLflow ({type(exc).__name__}: {exc}); it is "
                            f"still at {location}")
                self.client.set_tag(run_id, "peftsweep.checkpoint_log_error", f"{type(exc).__name__}: {exc}"[:500])
        self.client.set_terminated(run_id, mlflow_status)

    def _log_checkpoint(self, run_id: str, location: str, method: str) -> None:
        from peftsweep.trainers.checkpoint import tracked_files  # imported here: torch stays out of `summary`

        files = tracked_files(method)
        with storage.local_copy(location, only=list(files.only) if files.only else None) as checkpoint:
            for item in sorted(checkpoint.iterdir()):
                if item.name in files.never or (files.only and item.name not in files.only):
                    continue
                if item.is_dir():
                    self.client.log_artifacts(run_id, str(item), f"checkpoint/{item.name}")
                else:
                    self.client.log_artifact(run_id, str(item), "checkpoint")

    def _timing(self, run_id: str, result: dict[str, Any], step: int) -> list[Metric]:
        """startup_seconds: trial start to first training step (the per-trial fixed cost; of the last start, for a
        resumed trial); wall_seconds: the time its job ran, to the last report, summed over the drivers that ran it
        (not the time the sweep was down); worker_seconds: wall seconds times the Train job's workers (the compute it
        held: what a cluster bills), gpu_seconds likewise times each worker's GPUs, when it had any."""
        if not all(isinstance(result.get(k), float) for k in ("train_started_at", "reported_at")):
            return []
        now = int(time.time() * 1000)
        wall = self._wall(run_id, result)
        if wall is None:  # ended under an earlier driver (closed now, at the experiment's end): what it logged
            wall = self._last_wall(run_id) or result["reported_at"] - self.client.get_run(run_id).info.start_time / 1000
            start = None
        else:
            start = self.segment_start[run_id]
        metrics = [Metric(WALL_SECONDS, wall, now, step)]
        if start is not None:
            metrics.append(Metric(STARTUP_SECONDS, result["train_started_at"] - start, now, step))
        workers, gpus = result.get("num_workers"), result.get("gpus_per_worker") or 0
        if isinstance(workers, (int, float)) and workers > 0:
            metrics.append(Metric(WORKER_SECONDS, wall * workers, now, step))
            if gpus > 0:
                metrics.append(Metric(GPU_SECONDS, wall * workers * gpus, now, step))
        return metrics

    def on_experiment_end(self, trials, **info):
        """Close what a killed driver left open: runs of trials Tune knows ended, and runs Tune never heard of.
        After Ctrl-C the trials Tune cut short have not ended: `close_interrupted` closes their runs, to be reopened by
        --resume."""
        by_id = {t.trial_id: t for t in trials}
        for run in trial_runs(self.client, self.experiment_id, self.parent_run_id):
            if run.info.status != "RUNNING" or run.data.tags.get(STAGE_TAG, SEARCH) != self.stage:
                continue
            trial = by_id.get(run.data.tags.get(TRIAL_TAG, ""))
            if trial is None:
                # Started after Tune's last saved state, then the driver died: Tune re-planned that slot under a
                # new trial id, so this run would be a duplicate.
                self.client.set_tag(run.info.run_id, STATUS_TAG, "orphaned")
                self.client.delete_run(run.info.run_id)
            elif trial.status == "TERMINATED" and not self.interrupted():
                self.run_ids[trial.trial_id] = run.info.run_id
                self.on_trial_complete(0, trials, trial)
            elif trial.status == "ERROR":
                self.run_ids[trial.trial_id] = run.info.run_id
                self.on_trial_error(0, trials, trial)


# The line of a traceback that names the exception: `ray.exceptions.ActorDiedError: The actor died ...`
ERROR_LINE = re.compile(r"^(?:\w+\.)*(\w+(?:Error|Exception|Interrupt|Exit))(?:\([\w.]+\))?: ?(.*)$")


def error_reason(text: str) -> str:
    """One line of an error report: the last exception it names, with the first line of its message (our
    TrialFailedError's name dropped: its message is the reason); else its last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if (match := ERROR_LINE.match(line)) is not None:
            name, message = match.groups()
            return message.strip() if name == "TrialFailedError" else f"{name}: {message}".strip()
    return lines[-1] if lines else "unknown error"


def trial_error_reason(trial) -> str:
    """One line: why a trial failed (from Tune's error file: see error_reason)."""
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        return error_reason(Path(error_file).read_text())
    return str(getattr(trial, "error_msg", "") or "unknown error")
