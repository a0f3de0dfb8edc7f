"""Run a sweep: Ray Tune over the joint space, a Ray Train job per trial, MLflow tracking, then the summary.

A `Sweep` holds what one sweep works with (its plan, its state on disk, the MLflow client, the trial template and the
floor); it is made by one of three constructors (`start` a new sweep, `resume` an interrupted one, `confirm_existing`
for `peftsweep confirm`) and runs in steps: `search`, `confirm`, `finish`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from peftsweep.errors import UserError
from peftsweep.metric_names import PEAK_MEMORY_MB
from peftsweep.search import storage
from peftsweep.startup_marks import mark
from peftsweep.search.orchestration.cluster import check_capacity, check_storage, cluster_has_gpus, connect_ray
from peftsweep.search.orchestration.benchmarks import benchmark_front
from peftsweep.search.orchestration.confirm_stage import (confirm_tuner, discard_runs, log_confirmation, next_look,
                                                          plan_work, tune_path_for)
from peftsweep.search.orchestration.floor import describe, sweep_floor
from peftsweep.search.orchestration.pareto_asha import ParetoASHA
from peftsweep.search.orchestration.progress import ProgressPrinter
from peftsweep.search.orchestration.ray_private import exclude_tmp_files_from_tune_sync, pace_tune_state_saves
from peftsweep.search.orchestration.resume import SweepState, read_state, sweep_to_resume, write_state
from peftsweep.search.orchestration.searcher import scheduler_for, searcher_and_space
from peftsweep.search.orchestration.train_jobs import EARLY_END, EndTrainJobs, interrupt_on_ctrl_c, start_jobs_actor
from peftsweep.search.orchestration.trial import resources_of_point, sweep_trial
from peftsweep.search.orchestration.warm_start import WarmStart, gather
from peftsweep.search.plan import SweepPlan
from peftsweep.search.results.records import CONFIRM, SEARCH, Floor, floor_accuracy
from peftsweep.search.results.summary import Summary, write_files
from peftsweep.search.tracking.cleanup import delete_dominated_checkpoints
from peftsweep.search.tracking.client import (OBJECTIVES_TAG, SWEEP_CONFIG_ARTIFACT, client_for, close_interrupted,
                                              ensure_experiment, latest_sweep, logged_config, start_parent, trial_runs)
from peftsweep.search.tracking.front_view import save_front_view
from peftsweep.search.tracking.runs import logged_floor, summarize_sweep, tag_front
from peftsweep.search.tracking.trial_logger import MlflowTrialLogger
from peftsweep.trainers.config import TrialTemplate

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    summary: Summary
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    summary_json: Path
    summary_csv: Path
    status: str = "finished"  # finished | interrupted (continue it with --resume)


def run_sweep(plan: SweepPlan, address: str | None = None, resume: bool = False,
              restart: bool = False) -> SweepOutcome:
    """Run the sweep; `resume` continues the interrupted sweep in output_dir, `restart` abandons it."""
    c = plan.config
    resumed = sweep_to_resume(c.output_path, c.model_dump(mode="json"), resume, restart)  # raises if unclear
    sweep = Sweep.resume(plan, resumed, address) if resumed else Sweep.start(plan, address, restart)
    status = "interrupted"  # an exception (a second Ctrl-C, a lost cluster) leaves it resumable
    try:
        status = sweep.search()
        if sweep.state.stage == CONFIRM and (status == "finished" or sweep.resumed):
            status = sweep.confirm()
    finally:
        summary = sweep.finish(status)
    return sweep.outcome(summary, status)


def confirm_sweep(tracking_uri: str, experiment: str, seeds: int, address: str | None = None,
                  best_per_method: bool | None = None) -> tuple[SweepPlan, SweepOutcome]:
    """`peftsweep confirm`: give every confirmed configuration of the experiment's newest sweep (and those its front
    and comparison select now) `seeds` confirm runs in all, training only the missing ones, then summarize again.
    Run again after an interruption, it continues the same pass."""
    sweep = Sweep.confirm_existing(tracking_uri, experiment, seeds, address)
    status = "interrupted"
    try:
        # `peftsweep confirm --seeds N` asks for N seeds, whatever the sweep's confirm.seeds said
        status = sweep.confirm(best_per_method, auto=False)
    finally:
        summary = sweep.finish(status)
    return sweep.plan, sweep.outcome(summary, status)


@dataclass
class Sweep:
    plan: SweepPlan
    state: SweepState
    client: Any  # MlflowClient
    template: TrialTemplate
    floor: Floor | None
    resumed: bool = False  # continues an interrupted sweep (its Tune experiments are restored, not started)
    warm: WarmStart | None = None  # earlier sweeps' trials that seed the searcher

    @classmethod
    def start(cls, plan: SweepPlan, address: str | None = None, restart: bool = False) -> Sweep:
        """A new sweep: its MLflow parent run, its saved views, its state on disk, its floor."""
        c = plan.config
        client = client_for(c.tracking_uri)
        previous = read_state(c.output_path)
        if previous and previous.status == "running" and restart:
            abandon(client_for(previous.tracking_uri), previous)
        warm = None
        if c.search.warm_start:  # read before Ray starts: a source that does not fit is a config error
            warm = gather(c.search.warm_start, c.model_dump(mode="json"), plan.methods, c.tracking_uri)
        connect(plan, address)
        for line in warm.lines if warm else []:
            log.info(line)
        experiment_id = ensure_experiment(client, c.experiment, c.output_path / "mlartifacts" if not c.tracking.uri
                                          else None)
        # The config as the user wrote it (validated): `peftsweep confirm` validates it again from the parent run.
        parent_run_id = start_parent(client, experiment_id, c.name, logged_params(plan),
                                     c.model_dump(mode="json", exclude_unset=True))
        client.set_tag(parent_run_id, OBJECTIVES_TAG, c.objective_set.describe())
        save_front_view(client, experiment_id, parent_run_id, c.objective_set)
        state = new_state(plan, parent_run_id, experiment_id, c.tracking_uri, confirm_seeds=c.confirm.first_seeds)
        write_state(c.output_path, state)
        return cls.with_floor(plan, state, client, warm=warm)

    @classmethod
    def resume(cls, plan: SweepPlan, state: SweepState, address: str | None = None) -> Sweep:
        """The interrupted sweep `state` describes, continued where it stopped (its stage, its Tune experiment)."""
        c = plan.config
        client = client_for(c.tracking_uri)
        connect(plan, address)
        client.update_run(state.parent_run_id, status="RUNNING")
        log.info(f"resuming sweep {c.name!r} ({state.stage} stage): MLflow parent run {state.parent_run_id}, "
                 f"Tune state {state.tune_path}")
        return cls.with_floor(plan, state, client, resumed=True)

    @classmethod
    def with_floor(cls, plan: SweepPlan, state: SweepState, client, **kw) -> Sweep:
        template = trial_template(plan)
        floor = sweep_floor(client, state.parent_run_id, plan.config.task, plan.data, template)
        log.info(describe(floor))
        return cls(plan, state, client, template, floor, **kw)

    @classmethod
    def confirm_existing(cls, tracking_uri: str, experiment: str, seeds: int, address: str | None = None) -> Sweep:
        """The experiment's newest sweep, as its parent run logged it, set to give each configuration `seeds` confirm
        runs (its store and experiment: the ones named on the command line, the same seen from where it runs)."""
        from pydantic import ValidationError

        from peftsweep.search.config import SweepConfig, Tracking, describe_errors
        from peftsweep.search.plan import build_plan

        client = client_for(tracking_uri)
        try:
            experiment_id, parent_run_id = latest_sweep(client, experiment)
        except LookupError as exc:
            raise UserError(f"--experiment: {exc} in {tracking_uri}") from None
        raw = logged_config(client, parent_run_id)
        if raw is None:
            raise UserError(f"--experiment {experiment}: its newest sweep (parent run {parent_run_id}) did not log "
                            f"its config ({SWEEP_CONFIG_ARTIFACT}: sweeps log it since the confirm stage exists); set "
                            f"confirm.seeds in its config and run it again")
        try:
            started = SweepConfig.model_validate(raw)
        except ValidationError as exc:
            raise UserError(describe_errors(exc), "the sweep's logged config no longer validates") from None
        config = started.model_copy(update={"tracking": Tracking(uri=tracking_uri, experiment=experiment)})
        plan = build_plan(config)
        out = config.output_path
        state = read_state(out)
        if state is None or state.parent_run_id != parent_run_id:  # run elsewhere: its Tune state found by its name
            state = new_state(plan, parent_run_id, experiment_id, tracking_uri, config=started.model_dump(mode="json"))
        elif state.status == "running" and state.stage == SEARCH:
            raise UserError(f"{out}: the sweep's search was interrupted: continue it first with "
                            f"peftsweep run <config> --resume")
        state.stage, state.status, state.confirm_seeds = CONFIRM, "running", seeds
        connect_ray(address)
        check_capacity(plan)
        write_state(out, state)
        client.update_run(parent_run_id, status="RUNNING")
        return cls(plan, state, client, trial_template(plan), logged_floor(client, parent_run_id))

    # The steps
    def search(self) -> str:
        """The search stage (unless a resumed sweep is past it): "finished" or "interrupted"."""
        if self.state.stage != SEARCH:
            return "finished"
        searcher, param_space, num_samples = searcher_and_space(self.plan, self.warm)
        total = len(param_space["point"]["grid_search"]) if param_space else num_samples
        status = fit(self.search_tuner(searcher, param_space, num_samples, total), self.state.tune_path)
        if status == "finished" and self.state.confirm_seeds:
            self.state.stage = CONFIRM
            self.save_state()
        return status

    def confirm(self, best_per_method: bool | None = None, auto: bool | None = None) -> str:
        """Train the confirm runs still missing (state.confirm_seeds per configuration). With `confirm.seeds: auto`
        (`auto`: the config's unless given), then look at the verdicts: while some are undecided and
        `confirm.max_seeds` allows, give those configurations (and the reference they are paired with) the next
        batch of seeds."""
        c = self.plan.config
        status = self.confirm_pass(best_per_method)
        while status == "finished" and (c.confirm.auto if auto is None else auto):
            summary = self.summarize()
            look = next_look(summary.confirmation, self.state.confirm_seeds, c.confirm.max_seeds)
            if look is None:
                break
            seeds, only = look
            undecided = sum(1 for x in summary.confirmation.compared if x.undecided)
            log.info(f"confirm stage: {undecided} verdict{'s' if undecided != 1 else ''} undecided at "
                     f"{self.state.confirm_seeds} seeds: {seeds} seeds for {len(only)} configurations "
                     f"(confirm.seeds: auto, at most {c.confirm.max_seeds})")
            self.state.confirm_seeds = seeds
            self.save_state()
            status = self.confirm_pass(best_per_method, only=only)
        return status

    def confirm_pass(self, best_per_method: bool | None = None, only: set[str] | None = None) -> str:
        """One confirm pass: the runs still missing for state.confirm_seeds seeds (of the `only` configurations, when
        given); a pass that was interrupted is continued from Tune's state, its unfinished runs from their
        checkpoints."""
        c, state = self.plan.config, self.state
        tune_path = tune_path_for(state.tune_path, state.confirm_seeds)
        if state.confirm_tune_path != tune_path:
            state.confirm_tune_path = tune_path
            self.save_state()
        trainable = self.trainable(tune_path)
        if tune.Tuner.can_restore(tune_path):
            log.info(f"continuing the confirm stage from {tune_path}")
            tuner = tune.Tuner.restore(tune_path, trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
            return fit(tuner, tune_path)
        best_per_method = c.confirm.best_per_method if best_per_method is None else best_per_method
        work = plan_work(self.summarize(), c.train.seed, state.confirm_seeds, best_per_method, only=only)
        discard_runs(self.client, work.discard)
        if not work.points:
            log.info(f"confirm stage: nothing to train ({len(work.selected)} configurations already have a run for "
                     f"each of the {len(work.seeds)} seeds)")
            return "finished"
        log.info(f"confirm stage: {len(work.selected)} configurations x {len(work.seeds)} new seeds "
                 f"({', '.join(map(str, work.seeds))}): {len(work.points)} runs")
        tuner = confirm_tuner(trainable, tune_path, work.points, self.trial_logger(CONFIRM),
                              c.search.max_concurrent_trials, c.train.epochs)
        return fit(tuner, tune_path)

    def finish(self, status: str) -> Summary:
        """Summarize from MLflow, tag the front, write JSON/CSV, attach them to the parent run and close it."""
        client, state, c = self.client, self.state, self.plan.config
        if status == "interrupted":
            close_interrupted(client, state.experiment_id, state.parent_run_id)
        summary = self.summarize()
        tag_front(client, summary)
        if c.evaluate.lm_eval is not None and status == "finished":  # standard benchmarks on the front's models
            if benchmark_front(client, summary, state.parent_run_id, state.tracking_uri, self.template,
                               c.evaluate.lm_eval):
                summary = self.summarize()
        log_confirmation(client, state.parent_run_id, summary)
        if c.delete_dominated_checkpoints and status == "finished":
            freed = delete_dominated_checkpoints(client, summary.trials + summary.repeats, summary.front_configs)
            log.info(f"deleted the checkpoints of {freed.trials} dominated trials ({freed.bytes / 2**20:.1f} MiB)")
        for path in write_files(summary, self.summary_dir):
            client.log_artifact(state.parent_run_id, str(path), "summary")
        client.log_metric(state.parent_run_id, "hypervolume", summary.hypervolume)
        for name, value in summary.compute.items():  # the sweep's compute: what its trials' Train jobs held
            client.log_metric(state.parent_run_id, name, value)
        client.log_metric(state.parent_run_id, "front_size", len(summary.front))
        if status == "finished":
            client.set_terminated(state.parent_run_id, "FINISHED")
            state.status = "finished"
            self.save_state()
        else:  # sweep.json still says running: `--resume` continues it and reopens the parent run
            client.set_terminated(state.parent_run_id, "KILLED")
            log.info("the sweep was interrupted; continue it with: peftsweep run <config> --resume")
        return summary

    def outcome(self, summary: Summary, status: str) -> SweepOutcome:
        return SweepOutcome(summary, self.state.parent_run_id, self.state.experiment_id, self.state.tracking_uri,
                            self.summary_dir / "summary.json", self.summary_dir / "trials.csv", status)

    # What the steps share
    @property
    def summary_dir(self) -> Path:
        return self.plan.config.output_path / "summary"

    def summarize(self) -> Summary:
        return summarize_sweep(self.client, self.state.experiment_id, self.state.parent_run_id)

    def save_state(self) -> None:
        write_state(self.plan.config.output_path, self.state)

    def trainable(self, tune_path: str):
        """The Tune trainable of every trial of one Tune experiment (the search's, or a confirm pass's)."""
        # Tokenized once, stored once: every trial's workers fetch it from the object store. Wrapped, because Tune
        # resolves a bare reference in each trial's driver, which would then pickle the data again into its trainer.
        data_ref = {"tokenized": ray.put(self.plan.data)}
        trials_path = storage.join(storage_root(self.plan), "trials", storage.name_of(tune_path))
        return tune.with_resources(
            tune.with_parameters(sweep_trial, data=data_ref, template=self.template, storage_path=trials_path,
                                 memory_budget_mb=dict(self.plan.config.objective_set.budgets).get(PEAK_MEMORY_MB)),
            functools.partial(resources_of_point, template=self.template))

    def trial_logger(self, stage: str = SEARCH) -> MlflowTrialLogger:
        c = self.plan.config
        return MlflowTrialLogger(c.tracking_uri, self.state.experiment_id, self.state.parent_run_id, c.train.epochs,
                                 {"epochs": c.train.epochs, "batch_size": c.train.batch_size, "seed": c.train.seed},
                                 storage_root=storage_root(self.plan), stage=stage, interrupted=EARLY_END.by_user)

    def search_tuner(self, searcher, param_space: dict[str, Any], num_samples: int, total: int) -> tune.Tuner:
        c, tune_path = self.plan.config, self.state.tune_path
        trainable = self.trainable(tune_path)
        if self.resumed:
            # Finished trials stay finished, unfinished ones continue from their checkpoints, failed ones stay failed.
            return tune.Tuner.restore(tune_path, trainable, resume_unfinished=True, resume_errored=False,
                                      restart_errored=False, param_space=param_space or None)
        end_jobs = EndTrainJobs(storage.name_of(tune_path), c.search.time_budget_s)
        quality = self.plan.config.objective_set.quality
        scheduler = scheduler_for(self.plan, floor_accuracy(self.floor, quality) if self.floor else None)
        # ParetoASHA's rung records are saved with the sweep through a callback (Tune saves callbacks, not schedulers)
        saver = [scheduler.saver] if isinstance(scheduler, ParetoASHA) else []
        return tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
                                        max_concurrent_trials=c.search.max_concurrent_trials,
                                        # a trial's driver process is reused: no new process importing torch per trial
                                        reuse_actors=True),
            # The time budget is ours, not Tune's: Tune would kill the running trials with their Train jobs.
            run_config=tune.RunConfig(name=storage.name_of(tune_path), storage_path=storage.parent_of(tune_path),
                                      verbose=0, stop=end_jobs,
                                      callbacks=[ProgressPrinter(total, c.train.epochs, objectives=c.objective_set),
                                                 self.trial_logger(),
                                                 end_jobs, *saver]))


def connect(plan: SweepPlan, address: str | None) -> None:
    connect_ray(address)
    check_capacity(plan)
    check_storage(storage_root(plan))


def fit(tuner: tune.Tuner, tune_path: str) -> str:
    """Run a Tune experiment to its end: "finished", or "interrupted" (Ctrl-C; --resume continues it)."""
    # Every trial's Train job registers with this actor, so that it ends with its trial (orchestration.train_jobs)
    jobs = start_jobs_actor(storage.name_of(tune_path))
    exclude_tmp_files_from_tune_sync()  # a race in Tune's upload of its state: see search.orchestration.ray_private
    pace_tune_state_saves()  # Tune's state saved at most once a second and in at most 5 % of the driver's time
    try:
        with interrupt_on_ctrl_c() as early_end:
            mark("tune_fit")
            results = tuner.fit()
        # Tune returns normally after a Ctrl-C, with the trials it cut marked as ended: our record tells.
        ended = results.num_terminated + results.num_errors == len(results)
        return ("interrupted" if early_end.reason == "interrupted" or early_end.ctrl_c.is_set() else
                "finished" if ended or early_end.reason == "time budget" else "interrupted")
    finally:
        with contextlib.suppress(Exception):  # the cluster may be what failed
            ray.kill(jobs)


def new_state(plan: SweepPlan, parent_run_id: str, experiment_id: str, tracking_uri: str,
              config: dict[str, Any] | None = None, confirm_seeds: int = 0) -> SweepState:
    """A sweep's state: one Tune experiment directory per sweep (named after it and its parent run), so that a new
    sweep never mixes with an old one's state. `config`: the one it started with (default: the plan's)."""
    c = plan.config
    return SweepState(parent_run_id, experiment_id, tracking_uri,
                      storage.join(storage_root(plan), "ray", f"{c.name}-{parent_run_id[:8]}"),
                      config if config is not None else c.model_dump(mode="json"), confirm_seeds=confirm_seeds)


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
            "confirm_failed_runs": c.confirm.failed_runs, "confirm_looks": c.confirm.looks,
            "objectives": ",".join(c.objectives), "constraints": json.dumps(c.constraints, sort_keys=True)}


def abandon(client, state: SweepState) -> None:
    """--restart: close the interrupted sweep's parent run and its unfinished trial runs as KILLED."""
    for run in trial_runs(client, state.experiment_id, state.parent_run_id):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
    client.set_terminated(state.parent_run_id, "KILLED")
    log.info(f"abandoned the interrupted sweep (MLflow parent run {state.parent_run_id})")
