"""The sweep's running Ray Train jobs: however a trial ends, its Train job ends with it and gives its resources back.

Every trial is a Tune function trainable whose thread runs a Ray Train job (`TorchTrainer.fit()`). Tune knows nothing
of that job. When its scheduler stops a trial it only stops asking the trial for results and, with `reuse_actors`,
keeps the trial's actor for the next trial: the job trained on, holding its workers' CPUs, until the reused actor gave
up waiting for it and failed the next trial without telling the searcher (which then waited for it forever). When a
sweep ends early (time budget, Ctrl-C), Tune kills the trial actors; and a trial actor can die by itself (OOM-killed, SIGKILL). A Train controller
dies with the trial actor that owns it, and leaves its placement group reserved until the sweep's driver exits (the
group belongs to the job, not to the controller): later trials then wait for resources that never come back.

So every Train controller registers itself (`RegisterJob`, through search.orchestration.ray_private) with one small actor per
sweep, `TrainJobs`, which ends a job the way Ray Train's own Ctrl-C does (`TrainController.abort`: workers stopped,
placement group removed) and then removes any placement group the controller created that is still reserved (all of
them when the controller was dead already); and the sweep driver asks it to:
- when a trial ends, whether its scheduler stopped it, it finished or it failed (`EndTrainJobs.on_trial_complete`,
  `on_trial_error`; for a trial that finished or failed there is nothing left to end and the call returns at once);
- when the time budget is spent: every running job, its trial ending as stopped early (`EndTrainJobs.stop_all`);
- on Ctrl-C: every running job, its trial left unfinished, so that `--resume` continues it (`EndTrainJobs`, with
  `interrupt_on_ctrl_c`).
The trial learns from `TrainJobs` why its `fit()` raised (`JobOfTrial.outcome`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any, Iterator

import ray
from ray.tune import Callback
from ray.tune.stopper import Stopper

from peftsweep.search.orchestration.ray_private import JobHooks, placement_groups_created_by

log = logging.getLogger(__name__)

ABORT_TIMEOUT_S = 30.0  # a graceful abort takes about a second; after this the controller is killed
STOPPED, INTERRUPTED = "stopped", "interrupted"


def jobs_actor_name(experiment: str) -> str:
    """The name of a sweep's `TrainJobs` actor, from Tune's experiment name (known to the driver and every trial)."""
    return f"peftsweep-train-jobs:{experiment}"


@ray.remote(num_cpus=0)
class TrainJobs:
    """trial id -> the Train controller running that trial's job (and the queue its reports go through)."""

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[Any, str, Any]] = {}  # trial id -> (controller, its actor id, report queue)
        self._outcome: dict[str, str] = {}  # trial id -> stopped | interrupted
        self._interrupted = False  # Ctrl-C: no job may run any more

    async def register(self, trial_id: str, controller, actor_id: str, reports) -> None:
        self._jobs[trial_id] = (controller, actor_id, reports)
        if self._interrupted:
            self._outcome.setdefault(trial_id, INTERRUPTED)
        if trial_id in self._outcome:  # the trial ended while its job was starting
            await self._abort(trial_id)

    def forget(self, trial_id: str) -> None:
        """The job ended by itself (Ray Train removed its placement group)."""
        self._jobs.pop(trial_id, None)

    async def stop(self, trial_id: str) -> bool:
        """The trial has ended: abort its job if it is still running; True if there was one."""
        self._outcome.setdefault(trial_id, STOPPED)
        return await self._abort(trial_id)

    async def stop_all(self, outcome: str = STOPPED) -> list[str]:
        """Abort every running job (`interrupted`: also any job that starts later); the trials they belonged to."""
        self._interrupted |= outcome == INTERRUPTED
        running = sorted(self._jobs)
        for trial_id in running:
            self._outcome.setdefault(trial_id, outcome)
        await asyncio.gather(*(self._abort(trial_id) for trial_id in running))
        return running

    def outcome(self, trial_id: str) -> str | None:
        return self._outcome.get(trial_id)

    def running(self) -> list[str]:
        return sorted(self._jobs)

    async def _abort(self, trial_id: str) -> bool:
        job = self._jobs.pop(trial_id, None)
        if job is None:
            return False
        controller, actor_id, reports = job
        aborted = asyncio.wrap_future(controller.abort.remote().future())
        deadline = time.monotonic() + ABORT_TIMEOUT_S
        while time.monotonic() < deadline:
            done, _ = await asyncio.wait({aborted}, timeout=0.2)
            if done:
                # The controller removed its placement group and exited; or it was dead already (its trial's actor
                # died: OOM, SIGKILL) and left the group reserved. Either way the group goes.
                _release(actor_id, trial_id)
                return True
            # A controller whose reports the trial no longer reads is blocked putting one into the full report queue
            # and runs nothing else, our abort included, until the queue has room: empty it (the trial has ended, or
            # will repeat those epochs when resumed).
            await _drain(reports)
        ray.kill(controller)
        _release(actor_id, trial_id)
        log.warning(f"the Ray Train job of trial {trial_id} did not stop within {ABORT_TIMEOUT_S:g} s and was "
                    f"killed")
        return True


def _release(controller_id: str, trial_id: str) -> None:
    """Remove the placement groups a dead controller left reserved."""
    try:
        for group in placement_groups_created_by(controller_id):
            ray.util.remove_placement_group(group)
    except Exception as exc:  # the cluster is going away; nothing else to do
        log.warning(f"could not release the placement group of trial {trial_id}: {exc}")


async def _drain(reports) -> None:
    if reports is None:
        return
    while True:
        try:
            await reports.get_async(block=False)
        except Exception:  # Empty, or the queue is gone with the trial
            return


def start_jobs_actor(experiment: str):
    """Started by the sweep driver before Tune; the driver keeps the handle (the actor lives as long as it does)."""
    return TrainJobs.options(name=jobs_actor_name(experiment), get_if_exists=True).remote()


def _jobs_actor(experiment: str):
    if not ray.is_initialized():
        return None
    try:
        return ray.get_actor(jobs_actor_name(experiment))
    except ValueError:  # not in a sweep (a trial run alone), or the driver is gone
        return None


class RegisterJob(JobHooks):
    """Runs in the trial's Train controller: tells `TrainJobs` where the job is, as soon as the controller starts."""

    def __init__(self, experiment: str, trial_id: str, reports=None):
        self.experiment, self.trial_id, self.reports = experiment, trial_id, reports

    def controller_started(self, controller, actor_id: str) -> None:
        jobs = _jobs_actor(self.experiment)
        if jobs is not None:
            jobs.register.remote(self.trial_id, controller, actor_id, self.reports)


class JobOfTrial:
    """The trial's side: the callback for its TorchTrainer, and why `fit()` ended."""

    def __init__(self, experiment: str, trial_id: str, reports=None):
        self.experiment, self.trial_id = experiment, trial_id
        self.callback = RegisterJob(experiment, trial_id, reports)

    def ended(self) -> None:
        jobs = _jobs_actor(self.experiment)
        if jobs is not None:
            jobs.forget.remote(self.trial_id)

    def outcome(self) -> str | None:
        """`stopped` or `interrupted` when the sweep ended this job (then an error from `fit()` is that abort)."""
        jobs = _jobs_actor(self.experiment)
        try:
            return ray.get(jobs.outcome.remote(self.trial_id), timeout=30) if jobs is not None else None
        except Exception:  # the sweep's driver is gone: so is the reason to tell
            return None


class EarlyEnd:
    """Why the sweep running in this process ends before its last trial, if it does (signals belong to the process,
    and one sweep runs in a process at a time)."""

    def __init__(self) -> None:
        self.ctrl_c = threading.Event()  # set by the first Ctrl-C
        self.reason: str | None = None  # "interrupted" (Ctrl-C) | "time budget"

    def reset(self) -> None:
        self.ctrl_c.clear()
        self.reason = None

    def by_user(self) -> bool:
        """The user interrupted the sweep (Ctrl-C): the trials Tune cut short have not ended."""
        return self.ctrl_c.is_set()

    def __reduce__(self):  # pickled with Tune's callbacks: unpickled, it is the process's own
        return early_end, ()


EARLY_END = EarlyEnd()


def early_end() -> EarlyEnd:
    return EARLY_END


class EndTrainJobs(Callback, Stopper):
    """Sweep driver: ends the Train job of every trial that ends, and ends the sweep itself when its time budget is
    spent or on Ctrl-C, after ending the running jobs (Tune would kill their trials' actors with the jobs running).
    A Tune callback and a Tune stopper in one; Tune saves its state with the sweep's, so the time budget counts what
    a resumed sweep spent before."""

    def __init__(self, experiment: str, time_budget_s: float | None = None):
        self.experiment, self.time_budget_s = experiment, time_budget_s
        self.spent_before = 0.0
        self.started: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"started": None}

    def get_state(self) -> dict[str, Any]:
        return {"spent": self.spent()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.spent_before = float(state.get("spent", 0.0))

    def spent(self) -> float:
        return self.spent_before + (time.monotonic() - self.started if self.started is not None else 0.0)

    def setup(self, **info):
        self.started = time.monotonic()

    def _stop(self, trial_id: str) -> None:
        self._ask("stop", trial_id)

    def _stop_all(self, outcome: str) -> list[str]:
        return self._ask("stop_all", outcome) or []

    def _ask(self, method: str, *args):
        jobs = _jobs_actor(self.experiment)
        if jobs is None:
            return None
        try:
            return ray.get(getattr(jobs, method).remote(*args), timeout=ABORT_TIMEOUT_S + 10)
        except Exception as exc:  # never let this end Tune's loop: at worst a job outlives its trial
            log.warning(f"could not end Ray Train jobs ({method}{args}): {type(exc).__name__}: {exc}")
            return None

    # Tune callback
    def on_trial_complete(self, iteration, trials, trial, **info):
        self._stop(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._stop(trial.trial_id)

    def on_step_end(self, iteration, trials, **info):
        if EARLY_END.ctrl_c.is_set() and EARLY_END.reason is None:  # Tune ends its loop after this step
            EARLY_END.reason = "interrupted"
            self._stop_all(INTERRUPTED)  # the Ray Train jobs; a trial training in its own process ends with it
            running = [t for t in trials if t.status == "RUNNING"]
            log.info(f"interrupted: stopped {len(running)} running trials; --resume continues them from their last "
                     f"checkpoints")

    # Tune stopper
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        if EARLY_END.reason is None and self.time_budget_s is not None and self.spent() >= self.time_budget_s:
            EARLY_END.reason = "time budget"
            stopped = self._stop_all(STOPPED)
            log.info(f"time budget of {self.time_budget_s:g} s spent: no new trials; stopped {len(stopped)} running "
                     f"trials early")
        return EARLY_END.reason == "time budget"


@contextlib.contextmanager
def interrupt_on_ctrl_c() -> Iterator[EarlyEnd]:
    """While Tune runs: the first Ctrl-C ends Tune's loop after its current step, in which `EndTrainJobs` ends the
    running Train jobs (Tune then saves its state, so the sweep can be resumed); a second one quits at once. Replaces
    Tune's own handler, under which Tune kills the trial actors with their jobs running. Yields why the sweep ended
    early, if it did."""
    EARLY_END.reset()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield EARLY_END
        return
    previous = signal.getsignal(signal.SIGINT)
    saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def on_sigint(signum, frame):
        if EARLY_END.ctrl_c.is_set():
            raise KeyboardInterrupt
        EARLY_END.ctrl_c.set()
        log.info("Ctrl-C: ending the sweep after its running trials' jobs (Ctrl-C again to quit at once)")
        tune_handler = signal.getsignal(signal.SIGUSR1)  # Tune's: ends its loop after the current step
        if not callable(tune_handler):
            raise KeyboardInterrupt
        tune_log = logging.getLogger("ray.tune.tune")
        level, tune_log.level = tune_log.level, logging.ERROR  # its "Stop signal received" advice does not apply
        try:
            tune_handler(signal.SIGUSR1, frame)
        finally:
            tune_log.setLevel(level)
            signal.signal(signal.SIGINT, on_sigint)  # Tune's handler puts back what it found; that is us

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield EARLY_END
    finally:
        signal.signal(signal.SIGINT, previous)
        if saved_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env
