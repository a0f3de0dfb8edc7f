"""Multi-objective asynchronous successive halving for Ray Tune (after MOASHA, Schmucker et al. 2021).

At each rung (epochs grace_period * reduction_factor**k, below the planned epochs) a trial's result is ranked against
the results already recorded at that rung, its own included, over (validation accuracy: max, trainable %: min): by
non-dominated sorting, and inside a front by an epsilon-net (below). The trial goes on only if it ranks among the
first ceil(n / reduction_factor) of the n results; the first trial at a rung always goes on. Accuracy-only ASHA
stops a cheap trial whose accuracy is middling even when no cheaper trial beats it; here such a trial is on the
first front and, being the cheapest there, ranks first.

Epsilon-net inside a front: the cheapest point first, then again and again the point farthest from those already
taken (largest distance to the nearest taken one), distances on accuracy and log10 trainable %, each scaled to the
range of the results at the rung. Ties: the cheaper, then the more accurate, then the trial id.

The rung records are saved with the sweep (the scheduler is also a Tune callback, whose state Tune keeps with the
experiment), so a resumed sweep decides as an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from peftsweep.search.pareto import Point, pareto_front

ACCURACY, COST, TIME = "val_accuracy", "trainable_pct", "epoch"


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


def epsilon_net(front: list[Point], scale: tuple[float, float]) -> list[Point]:
    """The front's points in epsilon-net order: the cheapest first, then each next the farthest from those taken."""
    def coords(p: Point) -> tuple[float, float]:
        return p.accuracy / scale[0], math.log10(max(p.cost, 1e-12)) / scale[1]

    def key(p: Point) -> tuple[float, float, str]:
        return p.cost, -p.accuracy, p.id

    left = sorted(front, key=key)  # max() below keeps the first of equals: the tie-break is this order
    taken = [left.pop(0)] if left else []
    while left:
        # rounded: distances equal but for floating-point noise are a tie, broken by the order above
        best = max(left, key=lambda p: round(min(math.dist(coords(p), coords(t)) for t in taken), 9))
        taken.append(best)
        left.remove(best)
    return taken


def rank(points: list[Point]) -> list[str]:
    """The ids of the points at a rung, best first: by front, inside a front in epsilon-net order."""
    finite = [p for p in points if math.isfinite(p.accuracy) and math.isfinite(p.cost) and p.cost > 0]
    accs = [p.accuracy for p in finite] or [0.0]
    costs = [math.log10(p.cost) for p in finite] or [0.0]
    scale = (max(max(accs) - min(accs), 1e-9), max(max(costs) - min(costs), 1e-9))
    order = [p.id for front in fronts(finite) for p in epsilon_net(front, scale)]
    return order + sorted(p.id for p in points if p.id not in set(order))  # unusable results last


def continues(trial_id: str, recorded: dict[str, tuple[float, float]], reduction_factor: float) -> bool:
    """Whether the trial whose result is in `recorded` (with every earlier one at the rung) goes on."""
    if len(recorded) <= 1:
        return True
    order = rank([Point(i, acc, cost) for i, (acc, cost) in recorded.items()])
    return order.index(trial_id) < math.ceil(len(recorded) / reduction_factor)


class ParetoASHA(FIFOScheduler):
    """The scheduler (`early_stopping.objective: pareto`). Tune does not save a scheduler with the sweep: put
    `self.saver` in the Tuner's callbacks, whose state Tune does save and restore."""

    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 3):
        FIFOScheduler.__init__(self)
        self.reduction_factor = reduction_factor
        self.milestones = []
        t = grace_period
        while t < max_t:
            self.milestones.append(int(t))
            t *= reduction_factor
        self.rungs: dict[int, dict[str, tuple[float, float]]] = {m: {} for m in self.milestones}
        self.decisions: list[tuple[str, int, bool]] = []  # (trial id, milestone, went on), in order
        self.saver = RungRecords(self)

    # FIFOScheduler: results in, CONTINUE or STOP out
    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # it ranks on its own two objectives

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        return self.decide(trial.trial_id, result)

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        epoch = result.get(TIME)
        if not isinstance(epoch, (int, float)):
            return TrialScheduler.CONTINUE
        for milestone in reversed(self.milestones):  # the highest rung reached and not yet recorded
            recorded = self.rungs[milestone]
            if epoch >= milestone and trial_id not in recorded:
                recorded[trial_id] = (float(result.get(ACCURACY, math.nan)), float(result.get(COST, math.nan)))
                go_on = continues(trial_id, recorded, self.reduction_factor)
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
        return {"rungs": {str(m): {i: list(v) for i, v in r.items()} for m, r in rungs.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        for milestone, recorded in state.get("rungs", {}).items():
            self.scheduler.rungs.setdefault(int(milestone), {}).update({i: (v[0], v[1]) for i, v in recorded.items()})
