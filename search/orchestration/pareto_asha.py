"""Multi-objective asynchronous successive halving for Ray Tune (after MOASHA, Schmucker et al. 2021).

At each rung (epochs grace_period * reduction_factor**k, below the planned epochs) a trial's result is ranked against
the results already recorded at that rung, its own included, over the sweep's objectives (by default validation
accuracy: max, trainable %: min; `objectives:` adds or swaps costs): results at or below the floor (the accuracy with
nothing trained, measured before the search) last, the others by non-dominated sorting, and inside a front by an
epsilon-net (below). The trial goes on if it ranks among the first ceil(n / reduction_factor) of the n results, or if
it is an end of the first front (its cheapest point in each cost, or its most accurate): a cheap trial whose accuracy
is middling is kept when no cheaper trial beats it, and so is the most accurate trial however costly. The first
trial at a rung always goes on. Costs that grow with the epochs (time) are compared at the same rung, so alike.

Epsilon-net inside a front: its ends first (the cheapest in each cost, then the most accurate), then again and again
the point farthest from those already taken (largest distance to the nearest taken one), distances on accuracy and
log10 of each cost, each scaled to the range of the results at the rung. Ties: the cheaper, then the more accurate,
then the trial id.

A sweep needs a reference (full fine-tuning) to compare with: the last running trial of a reference method is never
stopped before one of them has finished.

The rung records are saved with the sweep (the scheduler is also a Tune callback, whose state Tune keeps with the
experiment), so a resumed sweep decides as an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from peftsweep.search.results.objectives import value_of
from peftsweep.search.results.pareto import Point, dominates, pareto_front, peel_fronts

TIME = "epoch"  # the time attribute: a trial reports once per epoch


def fronts(points: list[Point]) -> list[list[Point]]:
    """Non-dominated sorting: the first front, then the front of what is left, and so on (every point once; the
    non-finite ones last, together)."""
    out = list(peel_fronts(points))
    unusable = [p for p in points if not p.usable]
    return out + [unusable] if unusable else out


def _coords(p: Point, scale: tuple[float, ...]) -> tuple[float, ...]:
    return (p.accuracy / scale[0], *(math.log10(max(c, 1e-12)) / s for c, s in zip(p.costs, scale[1:])))


def _cheapest_first(p: Point) -> tuple:
    return (*p.costs, -p.accuracy, p.id)


def _ends(front: list[Point]) -> list[Point]:
    """The front's ends: its cheapest point in each cost (in the costs' order), then its most accurate; each once."""
    ordered = sorted(front, key=_cheapest_first)  # min() and max() keep the first of equals: ties go this way
    ends: list[Point] = []
    for i in range(len(front[0].costs) if front else 0):
        cheapest = min(ordered, key=lambda p: (p.costs[i], -p.accuracy))
        if cheapest not in ends:
            ends.append(cheapest)
    if ordered:
        most_accurate = max(ordered, key=lambda p: p.accuracy)
        if most_accurate not in ends:
            ends.append(most_accurate)
    return ends


def epsilon_net(front: list[Point], scale: tuple[float, ...]) -> list[Point]:
    """The front's points in epsilon-net order: its ends (the cheapest in each cost, then the most accurate) first,
    then each next the farthest from those taken."""
    left = sorted(front, key=_cheapest_first)  # max() below keeps the first of equals: the tie-break is this order
    taken = _ends(left)
    left = [p for p in left if p not in taken]
    coords = {p.id: _coords(p, scale) for p in front}
    # each left point's distance to the nearest taken one, updated as points are taken (k^2 work, not k^3)
    nearest = {p.id: min((math.dist(coords[p.id], coords[t.id]) for t in taken), default=math.inf) for p in left}
    while left:
        # rounded: distances equal but for floating-point noise are a tie, broken by the order above
        best = max(left, key=lambda p: round(nearest[p.id], 9))
        taken.append(best)
        left.remove(best)
        for p in left:
            nearest[p.id] = min(nearest[p.id], math.dist(coords[p.id], coords[best.id]))
    return taken


def _usable(p: Point) -> bool:
    return p.usable and all(c > 0 for c in p.costs)


def _span(values: list[float]) -> float:
    return max(max(values) - min(values), 1e-9) if values else 1e-9


def _scale(above: list[Point]) -> tuple[float, ...]:
    """The epsilon-net's units: the range of the accuracies and of each cost's log10 over the points above the floor."""
    n_costs = len(above[0].costs) if above else 0
    return (_span([p.accuracy for p in above]),
            *(_span([math.log10(p.costs[i]) for p in above]) for i in range(n_costs)))


def _after_the_fronts(points: list[Point], above: list[Point]) -> list[str]:
    """The ids ranked after every point above the floor: those at or below it (the more accurate first), then the
    unusable ones."""
    taken = {p.id for p in above}
    below = sorted((p for p in points if _usable(p) and p.id not in taken), key=lambda p: (-p.accuracy, *p.costs, p.id))
    return [p.id for p in below] + sorted(p.id for p in points if not _usable(p))


def rank(points: list[Point], floor: float | None = None) -> list[str]:
    """The ids of the points at a rung, best first: by front, inside a front in epsilon-net order; points at or below
    the floor after all others (the more accurate first), unusable results last."""
    above = [p for p in points if _usable(p) and (floor is None or p.accuracy > floor)]
    scale = _scale(above)
    return [p.id for front in fronts(above) for p in epsilon_net(front, scale)] + _after_the_fronts(points, above)


def first_front_ends(points: list[Point], floor: float | None = None) -> set[str]:
    """The ends of the first front (of the points above the floor): its cheapest in each cost, its most accurate."""
    above = [p for p in points if _usable(p) and (floor is None or p.accuracy > floor)]
    return {p.id for p in _ends(pareto_front(above))}


def continues(trial_id: str, recorded: dict[str, tuple[float, ...]], reduction_factor: float,
              floor: float | None = None) -> bool:
    """Whether the trial whose result is in `recorded` (id -> (quality, *costs), with every earlier one at the
    rung) goes on."""
    if len(recorded) <= 1:
        return True
    points = [Point(i, values[0], tuple(values[1:])) for i, values in recorded.items()]
    if trial_id in first_front_ends(points, floor):
        return True
    return within_quota(trial_id, points, floor, math.ceil(len(recorded) / reduction_factor))


def within_quota(trial_id: str, points: list[Point], floor: float | None, quota: int) -> bool:
    """Whether the trial's index in `rank(points, floor)` is below `quota`, working out no more of the ranking than
    that takes: the fronts up to the trial's, and the epsilon-net order of its own front only when the quota ends
    inside it (a rung of a thousand results is then decided in milliseconds, not in a tenth of a second or more)."""
    above = [p for p in points if _usable(p) and (floor is None or p.accuracy > floor)]
    mine = next((p for p in above if p.id == trial_id), None)
    if mine is None:  # at or below the floor, or unusable: after every point above
        return len(above) < quota and len(above) + _after_the_fronts(points, above).index(trial_id) < quota
    # Each point that dominates the trial is in an earlier front, so ranks before it: as many as the quota, and the
    # trial is outside it (one pass, where peeling the fronts up to the trial's takes one pass per front).
    if sum(1 for p in above if dominates(p, mine)) >= quota:
        return False
    ahead = 0
    for front in peel_fronts(above):
        if any(p is mine for p in front):
            return ahead + len(front) <= quota or ahead + [p.id for p in epsilon_net(front, _scale(above))].index(
                trial_id) < quota
        ahead += len(front)
        if ahead >= quota:
            return False  # the fronts before the trial's fill the quota
    return False


class ParetoASHA(FIFOScheduler):
    """The scheduler (`early_stopping.objective: pareto`). `objectives`: the quality metric (maximized), then one or
    more cost metrics (minimized) of a result, as search.results.objectives names them; `floor`: the quality with nothing trained (results not above it rank last);
    `is_reference`: whether a trial's config is of a reference method (its last running trial is kept until one has
    finished). Tune does not save a scheduler with the sweep: put `self.saver` in the Tuner's callbacks, whose state
    Tune does save and restore."""

    def __init__(self, max_t: int, *, objectives: tuple[str, ...], modes: tuple[str, ...], grace_period: int = 1,
                 reduction_factor: float = 3, floor: float | None = None,
                 is_reference: Callable[[dict], bool] | None = None):
        FIFOScheduler.__init__(self)
        if len(modes) < 2 or tuple(modes) != ("max", *["min"] * (len(modes) - 1)) or len(objectives) != len(modes):
            raise ValueError(f"ParetoASHA ranks a quality to maximize and costs to minimize, got {objectives} with "
                             f"modes {modes}")
        self.objectives, self.floor, self.is_reference = tuple(objectives), floor, is_reference
        self.reduction_factor = reduction_factor
        self.milestones = []
        t = grace_period
        while t < max_t:
            self.milestones.append(int(t))
            t *= reduction_factor
        self.rungs: dict[int, dict[str, tuple[float, ...]]] = {m: {} for m in self.milestones}
        self.decisions: list[tuple[str, int, bool]] = []  # (trial id, milestone, went on), in order
        self.reference_finished = False
        self.saver = RungRecords(self)

    # FIFOScheduler: results in, CONTINUE or STOP out
    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # it ranks on its own objectives

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        decision = self.decide(trial.trial_id, result)
        if decision == TrialScheduler.STOP and self._last_reference(tune_controller, trial):
            return TrialScheduler.CONTINUE
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        if self._reference(trial):
            self.reference_finished = True

    def _reference(self, trial) -> bool:
        return self.is_reference is not None and self.is_reference(getattr(trial, "config", None) or {})

    def _last_reference(self, tune_controller, trial) -> bool:
        """A reference trial with no reference finished yet and no other reference trial running."""
        if self.reference_finished or not self._reference(trial):
            return False
        live = tune_controller.get_live_trials() if tune_controller is not None else []
        return not any(t is not trial and t.status == "RUNNING" and self._reference(t) for t in live)

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        epoch = result.get(TIME)
        if not isinstance(epoch, (int, float)):
            return TrialScheduler.CONTINUE
        for milestone in reversed(self.milestones):  # the highest rung reached and not yet recorded
            recorded = self.rungs[milestone]
            if epoch >= milestone and trial_id not in recorded:
                recorded[trial_id] = tuple(value_of(result, name) for name in self.objectives)
                go_on = continues(trial_id, recorded, self.reduction_factor, self.floor)
                self.decisions.append((trial_id, milestone, go_on))
                return TrialScheduler.CONTINUE if go_on else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "ParetoASHA: " + ", ".join(f"epoch {m}: {len(r)} results" for m, r in self.rungs.items())


class RungRecords(Callback):
    """A Tune callback whose state is its scheduler's rung records (Tuner.restore unpickles the scheduler and its
    callbacks together, so this one still points at the restored scheduler)."""

    def __init__(self, scheduler: ParetoASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        rungs = self.scheduler.rungs
        return {"rungs": {str(m): {i: list(v) for i, v in r.items()} for m, r in rungs.items()},
                "reference_finished": self.scheduler.reference_finished}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.reference_finished = bool(state.get("reference_finished", False))
        for milestone, recorded in state.get("rungs", {}).items():
            self.scheduler.rungs.setdefault(int(milestone), {}).update({i: tuple(v) for i, v in recorded.items()})
