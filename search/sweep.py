"""Run a sweep: Ray Tune over the joint space, a Ray Train job per trial, MLflow tracking, then the summary."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import ray
from ray import tune

from search.plan import SweepPlan
from search.progress import ProgressPrinter
from search.space import define_space, grid, start_points
from search.summary import Summary, load_records, summarize, tag_front, write_files
from search.tracking import MlflowTrialLogger, client_for, ensure_experiment, start_parent
from search.trial import DRIVER_RESOURCES, sweep_trial
from spaces.errors import UserError

OBJECTIVES = ["val_accuracy", "trainable_pct"]
DIRECTIONS = ["max", "min"]


@dataclass
class SweepOutcome:
    summary: Summary
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    summary_json: Path
    summary_csv: Path


def connect_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    # Worker logs stay in Ray's session directory; the progress printer says what matters.
    ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
             configure_logging=False)


def check_capacity(plan: SweepPlan) -> None:
    """A trial asking for more than the whole cluster has would wait forever: refuse it up front."""
    available = ray.cluster_resources()
    problems = []
    for method in plan.methods:
        r = plan.config.resources.for_method(method)
        need_cpu, need_gpu = r.num_workers * r.cpus_per_worker, r.num_workers * r.gpus_per_worker
        if need_cpu > available.get("CPU", 0):
            problems.append(f"resources: a {method} trial needs {need_cpu:g} CPUs ({r.num_workers} workers x "
                            f"{r.cpus_per_worker:g}) but the Ray cluster has {available.get('CPU', 0):g}")
        if need_gpu > available.get("GPU", 0):
            problems.append(f"resources: a {method} trial needs {need_gpu:g} GPUs but the Ray cluster has "
                            f"{available.get('GPU', 0):g}")
    if problems:
        raise UserError(problems, "the sweep does not fit the Ray cluster")


def searcher_and_space(plan: SweepPlan) -> tuple[Any, dict[str, Any], int]:
    """(search algorithm, Tune param_space, num_samples) for the configured algorithm."""
    s = plan.config.search
    if s.algorithm == "grid":
        points = grid(plan.methods, s.grid_points)
        return None, {"point": tune.grid_search(points)}, 1
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    starts = start_points(plan.methods) if s.start_with_defaults else []
    samplers = {
        # group=True lets TPE model each method's own (conditional) parameters separately.
        "tpe": lambda: optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True,
                                                  n_startup_trials=max(4, len(starts)), constant_liar=True),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=s.seed,
                                                       population_size=min(50, max(4, s.num_samples // 4))),
        "random": lambda: optuna.samplers.RandomSampler(seed=s.seed),
    }
    searcher = OptunaSearch(space=partial(define_space, methods=plan.methods), metric=OBJECTIVES, mode=DIRECTIONS,
                            points_to_evaluate=starts or None, sampler=samplers[s.algorithm]())
    return searcher, {}, s.num_samples


def scheduler_for(plan: SweepPlan):
    e = plan.config.early_stopping
    if not e.enabled:
        return None
    return tune.schedulers.ASHAScheduler(metric="val_accuracy", mode="max", time_attr="training_iteration",
                                         max_t=plan.config.train.epochs, grace_period=e.grace_period,
                                         reduction_factor=e.reduction_factor)


def trial_settings(plan: SweepPlan, storage: Path) -> dict[str, Any]:
    c = plan.config
    return {"model": c.model, "trust_remote_code": c.trust_remote_code, "num_labels": plan.data.num_labels,
            "label_names": plan.data.label_names, "max_length": plan.data.max_length,
            "train": c.train.model_dump(), "storage_path": str(storage),
            "resources_by_method": {m: c.resources.for_method(m).model_dump() for m in plan.methods}}


def logged_params(plan: SweepPlan) -> dict[str, Any]:
    c = plan.config
    return {"model": c.model, "data": c.data.model_dump_json(exclude_none=True), "epochs": c.train.epochs,
            "batch_size": c.train.batch_size, "algorithm": c.search.algorithm, "num_samples": c.search.num_samples,
            "methods": ",".join(plan.methods), "seed": c.search.seed}


def run_sweep(plan: SweepPlan, address: str | None = None) -> SweepOutcome:
    c = plan.config
    out = c.output_path
    out.mkdir(parents=True, exist_ok=True)
    client = client_for(c.tracking_uri)
    experiment_id = ensure_experiment(client, c.experiment, out / "mlartifacts" if not c.tracking.uri else None)
    connect_ray(address)
    check_capacity(plan)
    searcher, param_space, num_samples = searcher_and_space(plan)
    total = len(param_space["point"]["grid_search"]) if param_space else num_samples
    parent_run_id = start_parent(client, experiment_id, c.name, logged_params(plan))
    mlflow_logger = MlflowTrialLogger(c.tracking_uri, experiment_id, parent_run_id, c.train.epochs,
                                      {"epochs": c.train.epochs, "batch_size": c.train.batch_size})
    # Tokenized once, stored once: every trial's workers read it zero-copy from the object store.
    data_ref = ray.put(plan.data)
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, data=data_ref, settings=trial_settings(plan, out / "trials")),
        DRIVER_RESOURCES)
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler_for(plan), num_samples=num_samples,
                                    max_concurrent_trials=c.search.max_concurrent_trials,
                                    time_budget_s=c.search.time_budget_s,
                                    # a trial's driver process is reused: no new process importing torch per trial
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=c.name, storage_path=str(out / "ray"), verbose=0,
                                  callbacks=[ProgressPrinter(total), mlflow_logger]))
    status = "FAILED"
    try:
        tuner.fit()
        status = "FINISHED"
    finally:
        summary = finish(client, experiment_id, parent_run_id, out, status)
    json_path, csv_path = out / "summary" / "summary.json", out / "summary" / "trials.csv"
    return SweepOutcome(summary, parent_run_id, experiment_id, c.tracking_uri, json_path, csv_path)


def finish(client, experiment_id: str, parent_run_id: str, out: Path, status: str) -> Summary:
    """Summarize from MLflow, tag the front, write JSON/CSV, attach them to the parent run and close it."""
    summary = summarize(load_records(client, experiment_id, parent_run_id))
    tag_front(client, summary)
    json_path, csv_path = write_files(summary, out / "summary")
    for path in (json_path, csv_path):
        client.log_artifact(parent_run_id, str(path), "summary")
    client.log_metric(parent_run_id, "hypervolume", summary.hypervolume)
    client.log_metric(parent_run_id, "front_size", len(summary.front))
    client.set_terminated(parent_run_id, status)
    return summary

