"""The Ray, Tune and MLflow settings peftsweep runs with, in one place for every entry point (the command line, the
benchmarks, the tests). Each is a default: a value already in the environment wins.

Ray's own actors (the Train controller, the trial actors) read some of these; on a cluster they run in processes
the driver did not start, so those travel in the job's runtime environment (`ACTOR_ENV`, see search.orchestration.sweep).
"""

from __future__ import annotations

import logging
import os

DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",  # a local Ray without Ray's token-auth warning
    # Ray starts its worker processes at niceness 15, below everything else on the machine: beside any other busy
    # process (a second test file, a notebook) a trial's workers got a few % of a core and took minutes to start
    # (bench/searchers.py --quick beside two busy loops: first trial after 123 s, not done in 4 min; at niceness 0:
    # all of it in 108 s). The trials' workers are the work, so they run at the ordinary priority. Read by the raylet
    # that a local sweep starts; a cluster's nodes keep what `ray start` was given.
    "RAY_worker_niceness": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",  # the Train controller polls its workers: ~6 s less per trial
    # Ray Train starts a PreemptionWatcher actor (a process) per job, to report spot-instance preemption; peftsweep
    # reports a lost node as an infrastructure failure without it
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # A reused trial actor waits this long for the previous trial's thread (Tune's default, 2 s, can be shorter than
    # a stopped trial's Train job takes to end; a reuse that gives up fails the next trial).
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
    # Ray Train waits this long for a trial's workers to be placed, then tries again; peftsweep gives up after
    # trainers.launch.WORKER_START_TRIES tries (Ray's own default is to try for ever), failing the trial with the reason.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
    # Tune's own CSV, JSON and TensorBoard files per trial (MLflow is the record): Tune re-uploaded the driver's copy
    # of every trial's files each time it saved its state, so a save grew with the trial count (bench/scale.py).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",  # Tune saves the sweep's state at most this often: a killed driver loses <= 1 s
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0: no Tune tables, our progress lines only
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # a failed trial gets one progress line, not a traceback
    # Tune's "took 0.9 s, may be a performance bottleneck" advice (report less often) is for code that reports;
    # peftsweep reports once per epoch, and its results wait on MLflow's server. Said when over 10 s.
    "TUNE_WARN_THRESHOLD_S": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # no "View run at" line per closed run
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no progress bar per artifact up- or downloaded
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # no "Generating train split" bars when reading a data file
    "TOKENIZERS_PARALLELISM": "false",  # no fork warning from the tokenizers library in Ray's workers
}
# Read by Ray's actors, not only by the driver: passed to them in the job's runtime environment.
ACTOR_ENV = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "TUNE_FUNCTION_THREAD_TIMEOUT_S",
             "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S")


# Other libraries' loggers, and the level below which they are not shown: the console is peftsweep's own lines.
QUIETED = {
    # bitsandbytes (imported by PEFT) warns at import that it cannot fetch an optional CPU kernel from the hub; it
    # falls back to its built-in one, so the warning is noise on every command.
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
    # MLflow announces each step of creating a new SQLite store ("Creating initial MLflow database tables...") at
    # INFO; problems still come through as warnings.
    "mlflow.store.db.utils": logging.WARNING,
    "alembic.runtime.migration": logging.WARNING,
    # At the end of a sweep Tune looks for the per-trial files peftsweep turns off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS)
    # and warns, naming every trial, that they are missing.
    "ray.tune.analysis.experiment_analysis": logging.ERROR,
}


def apply_defaults() -> None:
    """The settings above (a value already in the environment wins) and the quieted loggers."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_libraries()


def quiet_libraries() -> None:
    """In every process that runs peftsweep's code: the driver (by `apply_defaults`) and each trial's workers."""
    for name, level in QUIETED.items():
        logging.getLogger(name).setLevel(level)


def actor_env() -> dict[str, str]:
    return {key: os.environ[key] for key in ACTOR_ENV if key in os.environ}
