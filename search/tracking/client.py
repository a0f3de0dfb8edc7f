"""MLflow: one parent run per sweep, exactly one nested child run per trial (made by search.tracking.trial_logger); the
tags that say what each run is, and the client every other module uses.

Everything goes through an explicit `MlflowClient` (never `mlflow.set_experiment`, which exports MLFLOW_EXPERIMENT_ID
into the environment of every process started afterwards).
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

ROLE_TAG = "peftsweep.role"  # "sweep" on the parent, "trial" on children
TRIAL_TAG = "peftsweep.trial_id"
METHOD_TAG = "peftsweep.method"
STATUS_TAG = "peftsweep.status"  # completed | early_stopped | failed | interrupted (resumable)
PARETO_TAG = "peftsweep.pareto"  # "true" on front members, "false" on every other trial
FAILURE_TAG = "peftsweep.failure_reason"
RETRIED_TAG = "peftsweep.retried"  # a failed run tried again (confirm stage): why the first try failed
CHECKPOINT_TAG = "peftsweep.checkpoint_path"
STAGE_TAG = "peftsweep.stage"  # search | confirm (absent on runs of sweeps from before the confirm stage: search)
CONFIG_TAG = "peftsweep.config"  # the search trial id whose configuration the run trained (group the runs by it)
SEED_TAG = "peftsweep.seed"  # confirm runs: the training seed
REPEATS_TAG = "peftsweep.repeats_run"  # confirm runs: the run id of the search trial they repeat
OBJECTIVES_TAG = "peftsweep.objectives"  # on the parent run: what the front is over, and the budgets, in words
OVER_BUDGET_TAG = "peftsweep.over_budget"  # with budgets: the budgets a run broke ("" when it kept them all)
NODES_TAG = "peftsweep.node_ids"  # the Ray node ids the trial's workers ran on, comma-separated
NODE_IPS_TAG = "peftsweep.node_ips"
# Where and how the trial trained: device type (cuda | cpu), the process group's backend (nccl | gloo), autocast
# (bf16 | fp32), strategy (ddp | fsdp), CPU offload (yes | no), the storage dtypes of trainable and frozen weights
PLACE_TAGS = {"peftsweep.device": "device", "peftsweep.dist_backend": "dist_backend", "peftsweep.autocast": "autocast",
              "peftsweep.strategy": "strategy", "peftsweep.cpu_offload": "cpu_offload",
              "peftsweep.trainable_dtype": "trainable_dtype", "peftsweep.frozen_dtype": "frozen_dtype",
              "peftsweep.trains_in": "trains_in"}

_READY_STORES: set[str] = set()  # SQLite stores this process has opened once (their tables exist)


def client_for(uri: str) -> MlflowClient:
    if uri.startswith("sqlite:") and uri not in _READY_STORES:
        with sqlite_store_lock(uri):  # MLflow creates a new store's tables: one process at a time
            client = MlflowClient(tracking_uri=uri)
        _READY_STORES.add(uri)
        return client
    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def sqlite_store_lock(uri: str):
    """Held while MLflow opens a SQLite store. Opening a new store runs MLflow's migrations; two processes doing so at
    once (a sweep's driver starting while `peftsweep ui` or `summary` opens the same store, two sweeps sharing one
    `tracking.uri`) make one of them fail with "table ... already exists". The lock is an advisory `flock` on the
    database file itself (SQLite's own locks are POSIX record locks, independent of it): no extra file is left."""
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        yield
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does for a new store
    with open(path, "ab") as handle:  # an empty file is an empty SQLite database
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_reachable(uri: str, timeout_s: int = 5, key: str = "tracking.uri") -> list[str]:
    """A tracking server that does not answer is reported before any trial starts (MLflow would otherwise retry
    each call for minutes). Local stores (sqlite, file) are created on first use and need no check. `key`: what
    the user wrote the URI as, which each problem names."""
    if not uri.startswith(("http://", "https://")):
        return []
    import os

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)})
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        return []
    except Exception as exc:  # connection refused, DNS, TLS, HTTP errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        status = getattr(exc, "get_http_status_code", lambda: None)()
        if status == 401 or "error code 401" in first:
            who = os.environ.get("MLFLOW_TRACKING_USERNAME")
            return [f"{key}: the MLflow server at {uri} needs a user and password, and "
                    + (f"refused those of {who!r}" if who else "none were given")
                    + ": set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a user the server's admin made)"]
        if status == 403 or "error code 403" in first:
            return [f"{key}: the MLflow server at {uri} refused user "
                    f"{os.environ.get('MLFLOW_TRACKING_USERNAME')!r} access ({first[:200]})"]
        return [f"{key}: cannot reach the MLflow server at {uri} ({first[:200]}); "
                f"start it, fix the URI, or leave tracking.uri out for a local store"]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# MLflow 3's UI opens an experiment in the view its kind asks for; without one, in the GenAI (traces) view. A sweep
# is fine-tuning: the UI opens its training runs (the kinds are those of MLflow's UI, e.g. "custom_model_development").
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "finetuning"


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        location = artifact_root.as_uri() if artifact_root else None
        experiment_id = client.create_experiment(name, artifact_location=location)
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment_id


SWEEP_CONFIG_ARTIFACT = "sweep_config.json"  # on the parent run: the validated config (for `peftsweep confirm`)


def start_parent(client: MlflowClient, experiment_id: str, name: str, params: dict[str, Any],
                 config: dict[str, Any] | None = None) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={ROLE_TAG: "sweep"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    if config is not None:
        client.log_dict(run.info.run_id, config, SWEEP_CONFIG_ARTIFACT)
    return run.info.run_id


def logged_config(client: MlflowClient, parent_run_id: str) -> dict[str, Any] | None:
    """The validated config a sweep logged on its parent run; None for a sweep that did not log one."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(parent_run_id, SWEEP_CONFIG_ARTIFACT, tmp)
        except Exception:  # MLflow raises its own or the store's error for a missing artifact
            return None
        return json.loads(Path(path).read_text())


def latest_sweep(client: MlflowClient, experiment: str) -> tuple[str, str]:
    """(experiment id, parent run id) of the newest sweep in an experiment; LookupError if there is none."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no experiment {experiment!r}")
    parents = client.search_runs([found.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise LookupError(f"experiment {experiment!r} holds no peftsweep sweep")
    return found.experiment_id, parents[0].info.run_id


def trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    """Every child run of a sweep (paged: MLflow returns at most 1000 runs per call)."""
    runs, token = [], None
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{ROLE_TAG}` = 'trial'"
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def close_interrupted(client: MlflowClient, experiment_id: str, parent_run_id: str) -> None:
    """The sweep was interrupted: the runs of its unfinished trials are closed as KILLED (--resume reopens them)."""
    for run in trial_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, STATUS_TAG, "interrupted")
            client.set_terminated(run.info.run_id, "KILLED")


