"""Failures that a restart from the last checkpoint cannot fix, and how the trial learns of them.

Ray Train restarts a trial's workers after any worker error (up to `train.max_failures`). That is right for a killed
process or a lost node, but a NaN loss or an out-of-memory error would only happen again. So the worker that hits one
writes a marker into the trial's run directory (local or shared storage, any pyarrow filesystem URI):
- NaN/inf loss is seen by every rank at the same step, so all ranks simply stop and return (nothing for Ray Train to
  retry); whoever launched the job finds the marker after `fit()` and fails the trial with its reason.
- Other fatal errors (out of memory) are raised; a restarted worker finds the marker and fails at once.
"""

from __future__ import annotations

MARKER = "peftsweep_fatal.txt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the trial cannot recover, so it stops instead of training on garbage."""


class FatalTrialError(RuntimeError):
    """A trial failed for a reason a restart would repeat (the message says which)."""


def is_fatal(exc: BaseException) -> bool:
    import torch  # here: the summary reads failure reasons (below) without torch

    return isinstance(exc, (NonFiniteLossError, FatalTrialError, MemoryError, torch.OutOfMemoryError))


# A trial that failed for one of these lost its process, its node or its placement, not its training: what it
# trained says nothing about the configuration, so a confirm run that failed so is retried (search.orchestration.confirm_stage), and
# one that failed so even then is not counted against its configuration.
INFRASTRUCTURE_FAILURES = ("ActorDiedError", "RayActorError", "ActorUnavailableError", "NodeDiedError",
                           "WorkerCrashedError", "ObjectLostError", "OwnerDiedError", "RaySystemError",
                           "WorkerGroupStartupTimeoutError", "WorkerGroupStartupFailedError", "WorkerHealthCheckFailedError",
                           "WorkerHealthCheckTimeoutError", "PreemptionError", "NCCLHangError",
                           "CollectiveTimeoutError", "the Ray Train workers did not start",
                           # a trial that trained in its own process (resources.in_process) and lost it: Tune says so
                           # with Ray's message, without the error's type
                           "its worker process has died", "The actor died unexpectedly")


def is_infrastructure_failure(reason: str | None) -> bool:
    """A failure reason (as recorded on the trial's run) that says the trial lost its process or placement."""
    return bool(reason) and any(name in reason for name in INFRASTRUCTURE_FAILURES)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".strip()


def training_failure(exc: BaseException) -> str:
    """One line for a Ray Train job that failed for good: the lowest failed rank's error, or why its workers never
    started (Ray's own message is a paragraph of possible causes)."""
    failures = getattr(exc, "worker_failures", None) or {}
    if failures:
        rank, error = min(failures.items())
        error = getattr(error, "_base_exc", error)  # Ray wraps a worker's exception with its traceback text
        return f"rank {rank}: {describe(error)}"
    cause = getattr(exc, "controller_failure", None)
    if cause is not None and type(cause).__name__ == "WorkerGroupStartupTimeoutError":
        from peftsweep.trainers.launch import WORKER_START_TRIES

        first = str(cause).split(" Potential causes", 1)[0].strip()  # "...timed out after T seconds waiting for N workers."
        return (f"the Ray Train workers did not start ({WORKER_START_TRIES} tries): {first} Their resources were held "
                f"by other work or a node was lost")
    return describe(cause if cause is not None else exc)


def _marker(run_dir: str):
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(run_dir)
    return fs, f"{path.rstrip('/')}/{MARKER}"


def record_fatal(run_dir: str | None, exc: BaseException, where: str = "") -> None:
    record_reason(run_dir, describe(exc) + (f" ({where})" if where else ""))


def record_reason(run_dir: str | None, reason: str) -> None:
    """Leave the marker: the trial failed for this reason, and a retry of it fails at once with the same."""
    if not run_dir:
        return
    fs, path = _marker(run_dir)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(reason.encode())


def recorded_failure(run_dir: str | None) -> str | None:
    if not run_dir:
        return None
    import pyarrow.fs

    fs, path = _marker(run_dir)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def raise_if_fatal_recorded(run_dir: str | None) -> None:
    reason = recorded_failure(run_dir)
    if reason is not None:
        raise FatalTrialError(reason)
