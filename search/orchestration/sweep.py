"""Run a sweep: Ray Tune over the joint space, a Ray Train job per trial, MLflow tracking, then the summary."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from peftsweep.search.plan import SweepPlan, needs
from peftsweep.search.plan import capacity_problems
from peftsweep.search.orchestration.progress import ProgressPrinter
from peftsweep.search.orchestration.ray_private import exclude_tmp_files_from_tune_sync, quiet_worker_pool_note
from peftsweep.search.orchestration.pareto_asha import ParetoASHA
from peftsweep.search.orchestration.searcher import scheduler_for, searcher_and_space
from peftsweep.search.orchestration.warm_start import gather
from peftsweep.search.tracking.cleanup import delete_dominated_checkpoints
from peftsweep.search.orchestration.resume import SweepState, read_state, sweep_to_resume, write_state
from peftsweep.search import storage
from peftsweep.search.results.records import CONFIRM, SEARCH, Floor
from peftsweep.search.results.summary import Summary, write_files
from peftsweep.search.orchestration.floor import describe, sweep_floor
from peftsweep.search.tracking.front_view import save_front_view
from peftsweep.search.tracking.client import (SWEEP_CONFIG_ARTIFACT, client_for, close_interrupted, ensure_experiment,
                                              latest_sweep, logged_config, start_parent, trial_runs)
from peftsweep.search.tracking.runs import logged_floor, summarize_sweep, tag_front
from peftsweep.search.tracking.trial_logger import MlflowTrialLogger
from peftsweep.search.orchestration.train_jobs import EARLY_END, EndTrainJobs, interrupt_on_ctrl_c, start_jobs_actor
from peftsweep.search.orchestration.confirm_stage import (confirm_tuner, discard_runs, log_confirmation, next_look, plan_work,
                                           tune_path_for)
from peftsweep.search.orchestration.trial import DRIVER_RESOURCES, sweep_trial
from peftsweep.environment import actor_env, apply_defaults
from peftsweep.errors import UserError
from peftsweep.trainers.config import TrialTemplate


@dataclass
class SweepOutcome:
    summary: Summary
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    summary_json: Path
    summary_csv: Path
    status: str = "finished"  # finished | interrupted (continue it with --resume)


RAY_REACH_TIMEOUT_S = 5.0


def connect_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    apply_defaults()
    address = address or os.environ.get("RAY_ADDRESS")
    if (problem := unreachable_ray(address)) is not None:
        raise UserError(problem, "no Ray cluster")
    quiet_worker_pool_note()
    env = actor_env()  # on a cluster Ray's actors run in processes this one did not start
    # Worker logs stay in Ray's session directory; the progress printer says what matters.
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": env} if env else None)


def unreachable_ray(address: str | None) -> str | None:
    """Why no Ray cluster can answer at `address` (host:port or ray://host:port), tried with one short connection:
    `ray.init` itself waits for an absent cluster's GCS for minutes (measured: still waiting after 5 min)."""
    import socket

    if not address or address in ("auto", "local"):
        return None
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return None  # a form this check does not know: Ray reads it
    try:
        socket.create_connection((host, int(port)), timeout=RAY_REACH_TIMEOUT_S).close()
        return None
    except OSError as exc:
        return (f"Ray: nothing answers at {address} ({exc.strerror or type(exc).__name__}, tried for "
                f"{RAY_REACH_TIMEOUT_S:g} s): start the cluster (`ray start --head`), or check --address / "
                f"RAY_ADDRESS")


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def check_capacity(plan: SweepPlan) -> None:
    """The preflight's capacity check against the cluster Ray connected to (a trial asking for more than the whole
    cluster has would wait forever)."""
    available = ray.cluster_resources()
    if problems := capacity_problems(needs(plan.config, plan.methods, available), available):
        raise UserError(problems, "the sweep does not fit the Ray cluster")


def check_storage(location: str) -> None:
    """Checkpoints written on one machine's local disk are invisible to the others: say so before anything runs."""
    hosts = {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}
    if len(hosts) > 1 and not storage.is_uri(location):
        print(f"note: storage {location} is a local path and the Ray cluster spans {len(hosts)} machines: every "
              f"node must mount it at this same path (NFS), or set storage: to an object store URI (s3://...)",
              flush=True)


def trial_template(plan: SweepPlan) -> TrialTemplate:
    c = plan.config
    gpus = cluster_has_gpus()
    return TrialTemplate(model=c.model, trust_remote_code=c.trust_remote_code, task=c.task,
                         num_labels=plan.data.num_labels,
                         label_names=plan.data.label_names, max_length=plan.data.max_length, train=c.train,
                         generation=c.generation,
                         resources_by_method={m: c.resources.for_method(m, gpus, plan.strategies.get(m))
                                              for m in plan.methods})


def storage_root(plan: SweepPlan) -> str:
    return storage.resolve(plan.config.storage, plan.config.output_path)


def logged_params(plan: SweepPlan) -> dict[str, Any]:
    c = plan.config
    return {"model": c.model, "data": c.data.model_dump_json(exclude_none=True), "epochs": c.train.epochs,
            "batch_size": c.train.batch_size, "algorithm": c.search.algorithm, "num_samples": c.search.num_samples,
            "methods": ",".join(plan.methods), "seed": c.search.seed, "confirm_seeds": c.confirm.seeds,
            "confirm_confidence": c.confirm.confidence, "confirm_margin": c.confirm.margin,
            "confirm_failed_runs": c.confirm.failed_runs, "confirm_looks": c.confirm.looks}


def run_sweep(plan: SweepPlan, address: str | None = None, resume: bool = False,
              restart: bool = False) -> SweepOutcome:
    """Run the sweep; `resume` continues the interrupted sweep in output_dir, `restart` abandons it."""
    c = plan.config
    out = c.output_path
    config = c.model_dump(mode="json")
    previous = read_state(out)
    resumed = sweep_to_resume(out, config, resume, restart)  # raises before anything starts if unclear
    client = client_for(c.tracking_uri)
    if previous and previous.status == "running" and restart:
        abandon(client_for(previous.tracking_uri), previous)
    warm = None
    if c.search.warm_start and not resumed:  # read before Ray starts: a source that does not fit is a config error
        warm = gather(c.search.warm_start, config, plan.methods, c.tracking_uri)
    connect_ray(address)
    check_capacity(plan)
    check_storage(storage_root(plan))
    for line in warm.lines if warm else []:
        print(line, flush=True)
    if resumed:
        state = resumed
        client.update_run(state.parent_run_id, status="RUNNING")
        print(f"resuming sweep {c.name!r} ({state.stage} stage): MLflow parent run {state.parent_run_id}, Tune state "
              f"{state.tune_path}", flush=True)
    else:
        experiment_id = ensure_experiment(client, c.experiment, out / "mlartifacts" if not c.tracking.uri else None)
        # The config as the user wrote it (validated): `peftsweep confirm` validates it again from the parent run.
        parent_run_id = start_parent(client, experiment_id, c.name, logged_params(plan),
                                     c.model_dump(mode="json", exclude_unset=True))
        save_front_view(client, experiment_id, parent_run_id)
        # One Tune experiment directory per sweep, so a new sweep never mixes with an old one's state.
        state = SweepState(parent_run_id, experiment_id, c.tracking_uri,
                           storage.join(storage_root(plan), "ray", f"{c.name}-{parent_run_id[:8]}"), config,
                           confirm_seeds=c.confirm.first_seeds)
        write_state(out, state)
    template = trial_template(plan)
    floor = sweep_floor(client, state.parent_run_id, c.task, plan.data, template)
    print(describe(floor), flush=True)
    status = "interrupted"  # an exception (a second Ctrl-C, a lost cluster) leaves it resumable
    try:
        if state.stage == SEARCH:
            searcher, param_space, num_samples = searcher_and_space(plan, warm)
            total = len(param_space["point"]["grid_search"]) if param_space else num_samples
            status = fit(make_tuner(plan, state, searcher, param_space, num_samples, total, resumed is not None,
                                    template, floor), state.tune_path)
            if status == "finished" and state.confirm_seeds:
                state.stage = CONFIRM
                write_state(out, state)
        if state.stage == CONFIRM and (status == "finished" or resumed is not None):
            status = run_confirm_stage(client, state, plan, template, floor)
    finally:
        summary = finish(client, state, plan, status)
    json_path, csv_path = out / "summary" / "summary.json", out / "summary" / "trials.csv"
    return SweepOutcome(summary, state.parent_run_id, state.experiment_id, c.tracking_uri, json_path, csv_path,
                        status)


def fit(tuner: tune.Tuner, tune_path: str) -> str:
    """Run a Tune experiment to its end: "finished", or "interrupted" (Ctrl-C; --resume continues it)."""
    # Every trial's Train job registers with this actor, so that it ends with its trial (see search.orchestration.train_jobs).
    jobs = start_jobs_actor(storage.name_of(tune_path))
    exclude_tmp_files_from_tune_sync()  # a race in Tune's upload of its state: see search.orchestration.ray_private
    try:
        with interrupt_on_ctrl_c() as early_end:
            results = tuner.fit()
        # Tune returns normally after a Ctrl-C, with the trials it cut marked as ended: our record tells.
        ended = results.num_terminated + results.num_errors == len(results)
        return ("interrupted" if early_end.reason == "interrupted" or early_end.ctrl_c.is_set() else
                "finished" if ended or early_end.reason == "time budget" else "interrupted")
    finally:
        with contextlib.suppress(Exception):  # the cluster may be what failed
            ray.kill(jobs)


def trainable_for(plan: SweepPlan, tune_path: str, template: TrialTemplate):
    """The Tune trainable of every trial of one Tune experiment (the search's, or a confirm pass's)."""
    # Tokenized once, stored once: every trial's workers fetch it from the object store. Wrapped, because Tune
    # resolves a bare reference in each trial's driver, which would then pickle the data again into its trainer.
    data_ref = {"tokenized": ray.put(plan.data)}
    trials_path = storage.join(storage_root(plan), "trials", storage.name_of(tune_path))
    return tune.with_resources(
        tune.with_parameters(sweep_trial, data=data_ref, template=template, storage_path=trials_path),
        DRIVER_RESOURCES)


def trial_logger(plan: SweepPlan, state: SweepState, stage: str = SEARCH) -> MlflowTrialLogger:
    c = plan.config
    return MlflowTrialLogger(c.tracking_uri, state.experiment_id, state.parent_run_id, c.train.epochs,
                             {"epochs": c.train.epochs, "batch_size": c.train.batch_size, "seed": c.train.seed},
                             storage_root=storage_root(plan), stage=stage,
                             interrupted=EARLY_END.by_user)


def make_tuner(plan: SweepPlan, state: SweepState, searcher, param_space: dict[str, Any], num_samples: int,
               total: int, resumed: bool, template: TrialTemplate, floor: Floor | None = None) -> tune.Tuner:
    c = plan.config
    name = storage.name_of(state.tune_path)
    trainable = trainable_for(plan, state.tune_path, template)
    if resumed:
        # Finished trials stay finished, unfinished ones continue from their checkpoints, failed ones stay failed.
        return tune.Tuner.restore(state.tune_path, trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False, param_space=param_space or None)
    end_jobs = EndTrainJobs(name, c.search.time_budget_s)
    scheduler = scheduler_for(plan, floor.val_accuracy if floor else None)
    # ParetoASHA's rung records are saved with the sweep through a callback (Tune saves callbacks, not schedulers)
    saver = [scheduler.saver] if isinstance(scheduler, ParetoASHA) else []
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
                                    max_concurrent_trials=c.search.max_concurrent_trials,
                                    # a trial's driver process is reused: no new process importing torch per trial
                                    reuse_actors=True),
        # The time budget is ours, not Tune's: Tune would kill the running trials with their Train jobs.
        run_config=tune.RunConfig(name=name, storage_path=storage.parent_of(state.tune_path), verbose=0,
                                  stop=end_jobs,
                                  callbacks=[ProgressPrinter(total, c.train.epochs), trial_logger(plan, state),
                                             end_jobs, *saver]))


def run_confirm_stage(client, state: SweepState, plan: SweepPlan, template: TrialTemplate,
                      floor: Floor | None, best_per_method: bool | None = None, auto: bool | None = None) -> str:
    """Train the confirm runs still missing (state.confirm_seeds per configuration). With `confirm.seeds: auto`
    (`auto`: the config's unless given),
    then look at the verdicts: while some are undecided and `confirm.max_seeds` allows, give those configurations
    (and the reference they are paired with) the next batch of seeds."""
    c = plan.config
    status = run_confirm_pass(client, state, plan, template, floor, best_per_method)
    while status == "finished" and (c.confirm.auto if auto is None else auto):
        summary = summarize_sweep(client, state.experiment_id, state.parent_run_id)
        look = next_look(summary.confirmation, state.confirm_seeds, c.confirm.max_seeds)
        if look is None:
            break
        seeds, only = look
        undecided = sum(1 for x in summary.confirmation.compared if x.undecided)
        print(f"confirm stage: {undecided} verdict{'s' if undecided != 1 else ''} undecided at {state.confirm_seeds} "
              f"seeds: {seeds} seeds for {len(only)} configurations (confirm.seeds: auto, at most "
              f"{c.confirm.max_seeds})", flush=True)
        state.confirm_seeds = seeds
        write_state(c.output_path, state)
        status = run_confirm_pass(client, state, plan, template, floor, best_per_method, only=only)
    return status


def run_confirm_pass(client, state: SweepState, plan: SweepPlan, template: TrialTemplate, floor: Floor | None,
                     best_per_method: bool | None = None, only: set[str] | None = None) -> str:
    """One confirm pass: the runs still missing for state.confirm_seeds seeds (of the `only` configurations, when
    given); a pass that was interrupted is continued from Tune's state, its unfinished runs from their checkpoints."""
    c = plan.config
    tune_path = tune_path_for(state.tune_path, state.confirm_seeds)
    if state.confirm_tune_path != tune_path:
        state.confirm_tune_path = tune_path
        write_state(c.output_path, state)
    trainable = trainable_for(plan, tune_path, template)
    if tune.Tuner.can_restore(tune_path):
        print(f"continuing the confirm stage from {tune_path}", flush=True)
        tuner = tune.Tuner.restore(tune_path, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
        return fit(tuner, tune_path)
    summary = summarize_sweep(client, state.experiment_id, state.parent_run_id)
    best_per_method = c.confirm.best_per_method if best_per_method is None else best_per_method
    work = plan_work(summary, c.train.seed, state.confirm_seeds, best_per_method, only=only)
    discard_runs(client, work.discard)
    if not work.points:
        print(f"confirm stage: nothing to train ({len(work.selected)} configurations already have a run for each of "
              f"the {len(work.seeds)} seeds)", flush=True)
        return "finished"
    print(f"confirm stage: {len(work.selected)} configurations x {len(work.seeds)} new seeds "
          f"({', '.join(map(str, work.seeds))}): {len(work.points)} runs", flush=True)
    tuner = confirm_tuner(trainable, tune_path, work.points, trial_logger(plan, state, CONFIRM),
                          c.search.max_concurrent_trials, c.train.epochs)
    return fit(tuner, tune_path)


def confirm_sweep(tracking_uri: str, experiment: str, seeds: int, address: str | None = None,
                  best_per_method: bool | None = None) -> tuple[SweepPlan, SweepOutcome]:
    """`peftsweep confirm`: give every confirmed configuration of the experiment's newest sweep (and those its front
    and comparison select now) `seeds` confirm runs in all, training only the missing ones, then summarize again.
    Run again after an interruption, it continues the same pass."""
    from peftsweep.search.config import SweepConfig, Tracking, describe_errors
    from peftsweep.search.plan import build_plan
    from pydantic import ValidationError

    client = client_for(tracking_uri)
    try:
        experiment_id, parent_run_id = latest_sweep(client, experiment)
    except LookupError as exc:
        raise UserError(f"--experiment: {exc} in {tracking_uri}") from None
    raw = logged_config(client, parent_run_id)
    if raw is None:
        raise UserError(f"--experiment {experiment}: its newest sweep (parent run {parent_run_id}) did not log its "
                        f"config ({SWEEP_CONFIG_ARTIFACT}: sweeps log it since the confirm stage exists); set "
                        f"confirm.seeds in its config and run it again")
    try:
        started = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(describe_errors(exc), "the sweep's logged config no longer validates") from None
    # The store and experiment are the ones named on the command line (the same, seen from where it runs).
    config = started.model_copy(update={"tracking": Tracking(uri=tracking_uri, experiment=experiment)})
    plan = build_plan(config)
    out = config.output_path
    state = read_state(out)
    if state is None or state.parent_run_id != parent_run_id:  # run elsewhere: its Tune state is found by its name
        state = SweepState(parent_run_id, experiment_id, tracking_uri,
                           storage.join(storage_root(plan), "ray", f"{config.name}-{parent_run_id[:8]}"),
                           started.model_dump(mode="json"))
    elif state.status == "running" and state.stage == SEARCH:
        raise UserError(f"{out}: the sweep's search was interrupted: continue it first with "
                        f"peftsweep run <config> --resume")
    state.stage, state.status, state.confirm_seeds = CONFIRM, "running", seeds
    connect_ray(address)
    check_capacity(plan)
    write_state(out, state)
    client.update_run(parent_run_id, status="RUNNING")
    floor = logged_floor(client, parent_run_id)
    status = "interrupted"
    try:
        # `peftsweep confirm --seeds N` asks for N seeds, whatever the sweep's confirm.seeds said
        status = run_confirm_stage(client, state, plan, trial_template(plan), floor, best_per_method, auto=False)
    finally:
        summary = finish(client, state, plan, status)
    outcome = SweepOutcome(summary, parent_run_id, experiment_id, tracking_uri, out / "summary" / "summary.json",
                           out / "summary" / "trials.csv", status)
    return plan, outcome


def abandon(client, state: SweepState) -> None:
    """--restart: close the interrupted sweep's parent run and its unfinished trial runs as KILLED."""
    for run in trial_runs(client, state.experiment_id, state.parent_run_id):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
    client.set_terminated(state.parent_run_id, "KILLED")
    print(f"abandoned the interrupted sweep (MLflow parent run {state.parent_run_id})", flush=True)


def finish(client, state: SweepState, plan: SweepPlan, status: str) -> Summary:
    """Summarize from MLflow, tag the front, write JSON/CSV, attach them to the parent run and close it."""
    out = plan.config.output_path
    if status == "interrupted":
        close_interrupted(client, state.experiment_id, state.parent_run_id)
    summary = summarize_sweep(client, state.experiment_id, state.parent_run_id)
    tag_front(client, summary)
    log_confirmation(client, state.parent_run_id, summary)
    if plan.config.delete_dominated_checkpoints and status == "finished":
        freed = delete_dominated_checkpoints(client, summary.trials + summary.repeats,
                                             summary.front_configs)
        print(f"deleted the checkpoints of {freed.trials} dominated trials ({freed.bytes / 2**20:.1f} MiB)")
    json_path, csv_path = write_files(summary, out / "summary")
    for path in (json_path, csv_path):
        client.log_artifact(state.parent_run_id, str(path), "summary")
    client.log_metric(state.parent_run_id, "hypervolume", summary.hypervolume)
    for name, value in summary.compute.items():  # the sweep's compute: what its trials' Train jobs held
        client.log_metric(state.parent_run_id, name, value)
    client.log_metric(state.parent_run_id, "front_size", len(summary.front))
    if status == "finished":
        client.set_terminated(state.parent_run_id, "FINISHED")
        state.status = "finished"
        write_state(out, state)
    else:  # sweep.json still says running: `--resume` continues it and reopens the parent run
        client.set_terminated(state.parent_run_id, "KILLED")
        print("the sweep was interrupted; continue it with: peftsweep run <config> --resume", flush=True)
    return summary
