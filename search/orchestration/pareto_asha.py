"""Multi-objective asynchronous successive halving for Ray Tune (after MOASHA, Schmucker et al. 2021).

At each rung (epochs grace_period * reduction_factor**k, below the planned epochs) a trial's result is ranked against
the results already recorded at that rung, its own included, over its two objectives (by default validation accuracy:
max, trainable %: min): results at or below the floor (the accuracy with nothing trained, measured before the search)
last, the others by non-dominated sorting, and inside a front by an epsilon-net (below). The trial goes on if it ranks
among the first ceil(n / reduction_factor) of the n results, or if it is an end of the first front (its cheapest or
its most accurate point): a cheap trial whose accuracy is middling is kept when no cheaper trial beats it, and so is
the most accurate trial however costly. The first trial at a rung always goes on.

Epsilon-net inside a front: both ends first (the cheapest, then the most accurate), then again and again the point
farthest from those already taken (largest distance to the nearest taken one), distances on accuracy and log10
trainable %, each scaled to the range of the results at the rung. Ties: the cheaper, then the more accurate, then
the trial id.

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

from peftsweep.search.results.pareto import Point, pareto_front

TIME = "epoch"  # the time attribute: a trial reports once per epoch


def fronts(points: list[Point]) -> list[list[Point]]:
    """Non-dominated sorting: the first front, then the front of what is left, and so on (every point once)."""
    left, out = list(points), []
    while left:
        front = pareto_front(left)
        if not front:  # only non-finite points are left: they come last, together
            out.append(left)
            break
        ids = {p.id for p in front}
        out.append(front)
        left = [p for p in left if p.id not in ids]
    return out


def _coords(p: Point, scale: tuple[float, float]) -> tuple[float, float]:
    return p.accuracy / scale[0], math.log10(max(p.cost, 1e-12)) / scale[1]


def epsilon_net(front: list[Point], scale: tuple[float, float]) -> list[Point]:
    """The front's points in epsilon-net order: its two ends (the cheapest, then the most accurate) first, then each
    next the farthest from those taken."""
    def key(p: Point) -> tuple[float, float, str]:
        return p.cost, -p.accuracy, p.id

    left = sorted(front, key=key)  # max() below keeps the first of equals: the tie-break is this order
    taken = [left.pop(0)] if left else []
    if left:
        most_accurate = max(left, key=lambda p: p.accuracy)
        if most_accurate.accuracy > taken[0].accuracy:
            taken.append(most_accurate)
            left.remove(most_accurate)
    while left:
        # rounded: distances equal but for floating-point noise are a tie, broken by the order above
        best = max(left, key=lambda p: round(min(math.dist(_coords(p, scale), _coords(t, scale)) for t in taken), 9))
        taken.append(best)
        left.remove(best)
    return taken


def _usable(p: Point) -> bool:
    return math.isfinite(p.accuracy) and math.isfinite(p.cost) and p.cost > 0


def rank(points: list[Point], floor: float | None = None) -> list[str]:
    """The ids of the points at a rung, best first: by front, inside a front in epsilon-net order; points at or below
    the floor after all others (the more accurate first), unusable results last."""
    usable = [p for p in points if _usable(p)]
    above = [p for p in usable if floor is None or p.accuracy > floor]
    accs = [p.accuracy for p in above] or [0.0]
    costs = [math.log10(p.cost) for p in above] or [0.0]
    scale = (max(max(accs) - min(accs), 1e-9), max(max(costs) - min(costs), 1e-9))
    order = [p.id for front in fronts(above) for p in epsilon_net(front, scale)]
    below = sorted((p for p in usable if p.id not in set(order)), key=lambda p: (-p.accuracy, p.cost, p.id))
    order += [p.id for p in below]
    return order + sorted(p.id for p in points if p.id not in set(order))  # unusable results last


def first_front_ends(points: list[Point], floor: float | None = None) -> set[str]:
    """The cheapest and the most accurate point of the first front (of the points above the floor)."""
    above = [p for p in points if _usable(p) and (floor is None or p.accuracy > floor)]
    front = pareto_front(above)
    if not front:
        return set()
    return {min(front, key=lambda p: (p.cost, -p.accuracy, p.id)).id,
            max(front, key=lambda p: (p.accuracy, -p.cost, p.id)).id}


def continues(trial_id: str, recorded: dict[str, tuple[float, float]], reduction_factor: float,
              floor: float | None = None) -> bool:
    """Whether the trial whose result is in `recorded` (with every earlier one at the rung) goes on."""
    if len(recorded) <= 1:
        return True
    points = [Point(i, acc, cost) for i, (acc, cost) in recorded.items()]
    if trial_id in first_front_ends(points, floor):
        return True
    order = rank(points, floor)
    return order.index(trial_id) < math.ceil(len(recorded) / reduction_factor)


class ParetoASHA(FIFOScheduler):
    """The scheduler (`early_stopping.objective: pareto`). `objectives`: the quality metric (maximized) and the cost
    metric (minimized) of a result; `floor`: the quality with nothing trained (results not above it rank last);
    `is_reference`: whether a trial's config is of a reference method (its last running trial is kept until one has
    finished). Tune does not save a scheduler with the sweep: put `self.saver` in the Tuner's callbacks, whose state
    Tune does save and restore."""

    def __init__(self, max_t: int, *, objectives: tuple[str, str], modes: tuple[str, str], grace_period: int = 1,
                 reduction_factor: float = 3, floor: float | None = None,
                 is_reference: Callable[[dict], bool] | None = None):
        FIFOScheduler.__init__(self)
        if tuple(modes) != ("max", "min"):
            raise ValueError(f"ParetoASHA ranks a quality to maximize and a cost to minimize, got modes {modes}")
        self.objectives, self.floor, self.is_reference = tuple(objectives), floor, is_reference
        self.reduction_factor = reduction_factor
        self.milestones = []
        t = grace_period
        while t < max_t:
            self.milestones.append(int(t))
            t *= reduction_factor
        self.rungs: dict[int, dict[str, tuple[float, float]]] = {m: {} for m in self.milestones}
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
        quality, cost = self.objectives
        for milestone in reversed(self.milestones):  # the highest rung reached and not yet recorded
            recorded = self.rungs[milestone]
            if epoch >= milestone and trial_id not in recorded:
                recorded[trial_id] = (float(result.get(quality, math.nan)), float(result.get(cost, math.nan)))
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
            self.scheduler.rungs.setdefault(int(milestone), {}).update({i: (v[0], v[1]) for i, v in recorded.items()})
