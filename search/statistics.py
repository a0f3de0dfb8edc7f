"""Seed statistics for the confirm stage: means with t-intervals, and paired differences with a verdict.

Pure functions on scipy.stats. The intervals cover the spread from training randomness (weight init of new
parameters, data order, dropout) over the seeds run; the evaluation sets are the same for every run, so their
sampling error is not in them (see docs/confirm.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats

BETTER, WORSE = "better", "worse"
ACCURACY_BOUNDS, DIFFERENCE_BOUNDS = (0.0, 1.0), (-1.0, 1.0)
TOO_FEW = "too few seeds"  # fewer than 2 paired runs: no interval


def indistinguishable(confidence: float) -> str:
    return f"indistinguishable at {confidence:.0%}"


@dataclass(frozen=True)
class Interval:
    """The mean of n values with its two-sided t-interval (low = high = mean for one value: no spread known, so
    `known` is False)."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def known(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)


def mean_interval(values: Sequence[float], confidence: float = 0.95,
                  bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """Mean and t-interval (Student's t with n-1 degrees of freedom), cut to `bounds`, the range the true mean lies in
    (an accuracy in [0, 1], a difference of accuracies in [-1, 1]). Non-finite values are left out; no values give
    NaN; one value gives an unknown interval (NaN bounds); identical values a zero-width one."""
    xs = [float(v) for v in values if math.isfinite(v)]
    if not xs:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = math.fsum(xs) / len(xs)
    if len(xs) == 1:
        return Interval(mean, math.nan, math.nan, 1, confidence)
    if math.isclose(max(xs), min(xs), rel_tol=1e-9, abs_tol=1e-12):  # no spread (up to rounding): scipy would warn
        return Interval(mean, mean, mean, len(xs), confidence)
    low, high = stats.ttest_1samp(xs, 0.0).confidence_interval(confidence)
    return Interval(mean, max(float(low), bounds[0]), min(float(high), bounds[1]), len(xs), confidence)


@dataclass(frozen=True)
class PairedDifference:
    """a - b over the seeds both ran (paired t): the mean difference, its interval, the p-value, the verdict for a."""

    difference: Interval
    p_value: float
    verdict: str  # better | worse | indistinguishable at 95% | too few seeds
    seeds: tuple[int, ...]


def paired_difference(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> PairedDifference:
    """`a`, `b`: accuracy by seed (the interval is cut to [-1, 1]). Paired over the seeds both have a finite value for: the same seed gives both the
    same data order, so pairing removes what the seed does to both alike. `better` when the whole interval of a - b is
    above 0, `worse` when below, else indistinguishable at that confidence."""
    seeds = tuple(sorted(s for s in a.keys() & b.keys() if math.isfinite(a[s]) and math.isfinite(b[s])))
    diffs = [a[s] - b[s] for s in seeds]
    interval = mean_interval(diffs, confidence, DIFFERENCE_BOUNDS)
    if not interval.known:
        return PairedDifference(interval, math.nan, TOO_FEW, seeds)
    if interval.low == interval.high:  # identical differences: a t-test is undefined, the sign is not
        p_value = 0.0 if interval.mean != 0 else 1.0
    else:
        p_value = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    verdict = (BETTER if interval.low > 0 else WORSE if interval.high < 0 else indistinguishable(confidence))
    return PairedDifference(interval, p_value, verdict, seeds)
