"""Pareto front over (accuracy: max, one to three costs: min) and its hypervolume. Pure functions, no I/O.

Dominance: A dominates B when A is at least as accurate and at most as costly in every cost, and strictly better in
one of them. Exact duplicates do not dominate each other, so both stay on the front.

Hypervolume: measured with every cost on a log10 axis (trainable % spans five decades, memory and time several), but
a signed one (forgetting, which can be 0 or below) on a linear axis; from
a reference point of the floor's accuracy and one reference per cost (search.results.objectives chooses them). A cost
at or below HV_MIN_COST (0 trainable parameters) counts as HV_MIN_COST: its volume stays finite and a front never
loses volume by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

# The reference of trainable %: 1000 % (a decade beyond full fine-tuning), fixed, so that trainable-% fronts of any
# two sweeps compare.
HV_REFERENCE_PCT = 1000.0
HV_MIN_COST = 1e-6


@dataclass(frozen=True)
class Point:
    id: str
    accuracy: float
    costs: tuple[float, ...]  # each minimized, in the order of the sweep's cost objectives

    @property
    def usable(self) -> bool:
        return math.isfinite(self.accuracy) and all(math.isfinite(c) for c in self.costs)


def dominates(a: Point, b: Point) -> bool:
    """a is at least as good as b in every objective and strictly better in one."""
    if a.accuracy < b.accuracy or any(x > y for x, y in zip(a.costs, b.costs)):
        return False
    return a.accuracy > b.accuracy or any(x < y for x, y in zip(a.costs, b.costs))


def _cheapest_first(p: Point) -> tuple:
    return (*p.costs, -p.accuracy, p.id)


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Non-dominated points, cheapest first (by the first cost, then the next). Points with a non-finite accuracy or
    cost are ignored."""
    return next(peel_fronts(points), [])


def peel_fronts(points: Sequence[Point]) -> Iterator[list[Point]]:
    """The Pareto front (as pareto_front orders it), then the front of what is left, and so on, lazily; points with a
    non-finite accuracy or cost are left out. The points are sorted once, not once per front."""
    valid = [p for p in points if p.usable]
    if not valid:
        return
    if len(valid[0].costs) == 1:  # one cost: a sweep by cost
        left = sorted(valid, key=lambda p: (p.costs[0], -p.accuracy))
        front_of = _staircase
    else:
        # Any point that dominates p comes before it in this order (more accurate, or as accurate and cheaper in
        # sum), and a point dominated by a dropped one is dominated by the front member that dropped it: comparing
        # each point with the front so far is enough.
        left = sorted(valid, key=lambda p: (-p.accuracy, math.fsum(p.costs)))
        front_of = _non_dominated
    while left:
        front = front_of(left)
        yield front
        taken = {id(p) for p in front}
        left = [p for p in left if id(p) not in taken]


def _staircase(by_cost: list[Point]) -> list[Point]:
    """One cost, points in (cost, -accuracy) order: each more accurate than every cheaper one (and its duplicates)."""
    front: list[Point] = []
    best_accuracy, best_cost = -math.inf, None
    for p in by_cost:
        if p.accuracy > best_accuracy:
            front.append(p)
            best_accuracy, best_cost = p.accuracy, p.costs[0]
        elif p.accuracy == best_accuracy and p.costs[0] == best_cost:
            front.append(p)  # an exact duplicate of a front point
    return front


def _non_dominated(ordered: list[Point]) -> list[Point]:
    front: list[Point] = []
    for p in ordered:
        if not any(dominates(q, p) for q in front):
            front.append(p)
    return sorted(front, key=_cheapest_first)


def hypervolume(points: Sequence[Point], reference_accuracy: float = 0.0,
                reference_costs: Sequence[float] = (HV_REFERENCE_PCT,), log_axes: Sequence[bool] | None = None) -> float:
    """Volume dominated by the points in (accuracy, log10 cost, ...) up to the reference point: only what lies above
    `reference_accuracy` (the floor) and below each reference cost counts, so a point that crosses the floor adds
    its own volume above it, no more. One cost: the area of a staircase; more: Optuna's exact WFG algorithm.
    `log_axes`: per cost, whether it is measured in log10 (default: every one); a signed cost is not."""
    log_axes = tuple(log_axes) if log_axes is not None else (True,) * len(reference_costs)

    def axis(value: float, log: bool) -> float:
        return math.log10(max(value, HV_MIN_COST)) if log else value

    refs = [axis(r, log) for r, log in zip(reference_costs, log_axes)]
    inside = []
    for p in points:
        if not p.usable or len(p.costs) != len(refs):
            continue
        logs = tuple(axis(c, log) for c, log in zip(p.costs, log_axes))
        if p.accuracy > reference_accuracy and all(c < r for c, r in zip(logs, refs)):
            inside.append(Point(p.id, p.accuracy, logs))
    front = pareto_front(inside)
    if not front:
        return 0.0
    if len(refs) == 1:
        volume = 0.0
        for i, p in enumerate(front):
            next_cost = front[i + 1].costs[0] if i + 1 < len(front) else refs[0]
            volume += (next_cost - p.costs[0]) * (p.accuracy - reference_accuracy)
        return volume
    import numpy as np
    from optuna._hypervolume import compute_hypervolume  # private in Optuna: tests/search/test_pareto.py checks it

    losses = np.array([[-p.accuracy, *p.costs] for p in front])
    return float(compute_hypervolume(losses, np.array([-reference_accuracy, *refs]), assume_pareto=True))
