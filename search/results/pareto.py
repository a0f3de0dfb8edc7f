"""Pareto front over (accuracy: max, trainable %: min) and its hypervolume. Pure functions, no I/O.

Dominance: A dominates B when A is at least as accurate and at most as costly, and strictly better in one.
Exact duplicates do not dominate each other, so both stay on the front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Hypervolume reference: the sweep's floor accuracy (0 without one) and 1000 % trainable (a decade beyond full
# fine-tuning), cost on a log10 axis because trainable % spans five decades (0.01 % .. 100 %). A cost at or below
# HV_MIN_PCT (0 trainable parameters) counts as HV_MIN_PCT: its area stays finite and a front never loses area by it.
HV_REFERENCE_PCT = 1000.0
HV_MIN_PCT = 1e-6


@dataclass(frozen=True)
class Point:
    id: str
    accuracy: float
    cost: float  # trainable %


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Non-dominated points, cheapest first. Points with a non-finite accuracy or cost are ignored."""
    valid = [p for p in points if math.isfinite(p.accuracy) and math.isfinite(p.cost)]
    front: list[Point] = []
    best_accuracy, best_cost = -math.inf, None
    for p in sorted(valid, key=lambda p: (p.cost, -p.accuracy)):
        if p.accuracy > best_accuracy:
            front.append(p)
            best_accuracy, best_cost = p.accuracy, p.cost
        elif p.accuracy == best_accuracy and p.cost == best_cost:
            front.append(p)  # an exact duplicate of a front point
    return front


def hypervolume(points: Sequence[Point], reference_pct: float = HV_REFERENCE_PCT,
                reference_accuracy: float = 0.0) -> float:
    """Area dominated by the points in (log10 trainable %, accuracy), up to the reference point: only what lies above
    `reference_accuracy` (the floor) counts, so a point that crosses the floor adds its own area above it, no more."""
    clamped = [Point(p.id, p.accuracy, max(p.cost, HV_MIN_PCT)) for p in points
               if math.isfinite(p.accuracy) and math.isfinite(p.cost)]
    front = [p for p in pareto_front(clamped) if p.cost < reference_pct and p.accuracy > reference_accuracy]
    area = 0.0
    for i, p in enumerate(front):
        next_cost = front[i + 1].cost if i + 1 < len(front) else reference_pct
        area += (math.log10(next_cost) - math.log10(p.cost)) * (p.accuracy - reference_accuracy)
    return area
