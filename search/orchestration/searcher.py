"""What chooses the trials: the searcher (Optuna under Ray Tune, or a grid) with its start points and warm start, and
the early-stopping scheduler."""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from peftsweep.search.config import SearchSettings
from peftsweep.search.orchestration.bounded_tpe import BoundedTPESampler
from peftsweep.search.orchestration.pareto_asha import ParetoASHA
from peftsweep.search.plan import SweepPlan
from peftsweep.metric_names import WORKER_SECONDS
from peftsweep.search.results.objectives import NOT_RUN, Objectives, worker_seconds
from peftsweep.search.orchestration.space import define_space, grid, start_points
from peftsweep.search.points import unflat
from peftsweep.search.orchestration.warm_start import WarmStart, seed_searcher


def searcher_and_space(plan: SweepPlan, warm: WarmStart | None = None) -> tuple[Any, dict[str, Any], int]:
    """(search algorithm, Tune param_space, num_samples) for the configured algorithm; `warm`: earlier trials to
    seed it with (their methods get no start point)."""
    s = plan.config.search
    if s.algorithm == "grid":
        points = grid(plan.methods, s.grid_points)
        return None, {"point": tune.grid_search(points)}, 1
    tried = warm.methods if warm else set()
    starts = [p for p in start_points(plan.methods, s.start_points) if p["method"] not in tried]
    objectives = plan.config.objective_set
    searcher = BudgetedOptunaSearch(space=partial(define_space, methods=plan.methods), metric=list(objectives.names),
                                    mode=list(objectives.modes), points_to_evaluate=starts or None,
                                    sampler=make_sampler(s, len(starts)))
    searcher.objectives, searcher.planned_epochs = objectives, plan.config.train.epochs
    if warm:
        seed_searcher(searcher, warm)
    return searcher, {}, s.num_samples


class BudgetedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, told what it does not compute itself: the worker-seconds of a result (Tune's time times the
    trial's workers) when they are an objective, and with budgets each budget's violation, set on the Optuna trial as
    its constraints (`Trial.set_constraint`: TPE and NSGA-II rank infeasible trials last) before Optuna is told that
    the trial completed."""

    objectives: Objectives = Objectives()
    planned_epochs: int | None = None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            if WORKER_SECONDS in self.objectives.names and WORKER_SECONDS not in result:
                if math.isfinite(seconds := worker_seconds(result)):
                    result = result | {WORKER_SECONDS: seconds}
            for cost, violation in self.objectives.violations(result, self.planned_epochs).items():
                self._ot_trials[trial_id].set_constraint(cost, violation)
            if result.get(NOT_RUN):  # no values: Optuna records it pruned, infeasible by its constraints
                result = None
        super().on_trial_complete(trial_id, result, error)


def make_sampler(s: SearchSettings, n_starts: int):
    """The Optuna sampler for tpe / nsga2 / random (also used by bench/searchers.py, so it measures this one). With
    budgets, TPE and NSGA-II learn which trials broke them from each trial's constraints (random search has nothing
    to learn)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Ray warns when the define-by-run space takes over 1 s, advising to move computation out of it; that time is
    # TPE's own sampling, which runs inside the space's first suggest (bench/scale.py: late in a 1,000-trial sweep
    # on a busy machine), so the advice does not apply.
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line: the progress lines say it
    if s.algorithm == "tpe":
        # group=True lets TPE model each method's own (conditional) parameters separately. Bounded: past TPE_HISTORY
        # finished trials it sees the sweep's best and the most recent ones (search.orchestration.bounded_tpe).
        return BoundedTPESampler(seed=s.seed, multivariate=True, group=True, n_startup_trials=max(4, n_starts),
                                 constant_liar=True)
    if s.algorithm == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=min(50, max(4, s.num_samples // 4)))
    return optuna.samplers.RandomSampler(seed=s.seed)


def is_reference_trial(config: dict[str, Any]) -> bool:
    """Whether a trial's point is of a reference method (full fine-tuning, by its MethodSpec)."""
    from peftsweep.spaces import REGISTRY

    try:
        method = unflat(config)[0]
    except (KeyError, TypeError, AttributeError):
        return False
    spec = REGISTRY.get(method)
    return bool(spec and spec.reference)


def scheduler_for(plan: SweepPlan, floor: float | None = None):
    """The early-stopping scheduler; `floor`: the accuracy with nothing trained (the Pareto scheduler ranks results
    not above it last)."""
    e = plan.config.early_stopping
    if not e.enabled:
        return None
    if e.objective == "pareto":
        objectives = plan.config.objective_set
        return ParetoASHA(max_t=plan.config.train.epochs, grace_period=e.grace_period,
                          reduction_factor=e.reduction_factor, objectives=objectives.names, modes=objectives.modes,
                          floor=floor, is_reference=is_reference_trial)
    # time_attr epoch, not training_iteration: a trial continued from a checkpoint keeps counting its epochs.
    return tune.schedulers.ASHAScheduler(metric=plan.config.objective_set.quality, mode="max", time_attr="epoch",
                                         max_t=plan.config.train.epochs, grace_period=e.grace_period,
                                         reduction_factor=e.reduction_factor)
