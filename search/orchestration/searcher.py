"""What chooses the trials: the searcher (Optuna under Ray Tune, or a grid) with its start points and warm start, and
the early-stopping scheduler."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

from ray import tune

from peftsweep.search.config import SearchSettings
from peftsweep.search.orchestration.pareto_asha import ParetoASHA
from peftsweep.search.plan import SweepPlan
from peftsweep.metric_names import OBJECTIVES, QUALITY
from peftsweep.search.orchestration.space import define_space, grid, start_points
from peftsweep.search.points import unflat
from peftsweep.search.orchestration.warm_start import WarmStart, seed_searcher

METRIC_NAMES = [m.name for m in OBJECTIVES]  # what the searcher optimizes, and in which direction
DIRECTIONS = [m.better for m in OBJECTIVES]


def searcher_and_space(plan: SweepPlan, warm: WarmStart | None = None) -> tuple[Any, dict[str, Any], int]:
    """(search algorithm, Tune param_space, num_samples) for the configured algorithm; `warm`: earlier trials to
    seed it with (their methods get no start point)."""
    s = plan.config.search
    if s.algorithm == "grid":
        points = grid(plan.methods, s.grid_points)
        return None, {"point": tune.grid_search(points)}, 1
    from ray.tune.search.optuna import OptunaSearch

    tried = warm.methods if warm else set()
    starts = [p for p in start_points(plan.methods, s.start_points) if p["method"] not in tried]
    searcher = OptunaSearch(space=partial(define_space, methods=plan.methods), metric=METRIC_NAMES, mode=DIRECTIONS,
                            points_to_evaluate=starts or None, sampler=make_sampler(s, len(starts)))
    if warm:
        seed_searcher(searcher, warm)
    return searcher, {}, s.num_samples


def make_sampler(s: SearchSettings, n_starts: int):
    """The Optuna sampler for tpe / nsga2 / random (also used by bench/searchers.py, so it measures this one)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line: the progress lines say it
    if s.algorithm == "tpe":
        # group=True lets TPE model each method's own (conditional) parameters separately.
        return optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True,
                                          n_startup_trials=max(4, n_starts), constant_liar=True)
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
        return ParetoASHA(max_t=plan.config.train.epochs, grace_period=e.grace_period,
                          reduction_factor=e.reduction_factor, objectives=tuple(METRIC_NAMES), modes=tuple(DIRECTIONS),
                          floor=floor, is_reference=is_reference_trial)
    # time_attr epoch, not training_iteration: a trial continued from a checkpoint keeps counting its epochs.
    return tune.schedulers.ASHAScheduler(metric=QUALITY, mode="max", time_attr="epoch",
                                         max_t=plan.config.train.epochs, grace_period=e.grace_period,
                                         reduction_factor=e.reduction_factor)
