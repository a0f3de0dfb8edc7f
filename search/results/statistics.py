"""Seed statistics for the confirm stage: means with t-intervals, paired differences with a verdict, Holm's
adjustment over the comparisons, and the seeds an undecided comparison would need.

Pure functions on scipy.stats. The intervals cover the spread from training randomness (weight init of new
parameters, data order, dropout) over the seeds run; the evaluation sets are the same for every run, so their
sampling error is not in them (see docs/confirm.md).

A t-interval needs a spread: from one value, or from values that are all equal (accuracies are multiples of 1/N, so
equal per-seed differences are common with a few seeds), the spread is not known, and nothing is claimed: the
interval is unknown (NaN bounds), the p-value NaN, the verdict `too few seeds`. A p-value is never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from scipy import stats

BETTER, WORSE = "better", "worse"
DIFFERENCE_BOUNDS = (-1.0, 1.0)
TOO_FEW = "too few seeds"  # fewer than 2 paired runs, or no spread among them: no interval, no verdict
MAX_SEEDS_ESTIMATE = 1000  # seeds_to_decide says "more than this" beyond it


def undecided(confidence: float) -> str:
    return f"undecided: cannot tell at {confidence:.0%}"


def equivalent(margin: float) -> str:
    points = margin * 100
    return f"equivalent within {points:g} pt" + ("" if points == 1 else "s")


def is_undecided(verdict: str | None) -> bool:
    return bool(verdict) and (verdict.startswith("undecided") or verdict == TOO_FEW)


@dataclass(frozen=True)
class Interval:
    """The mean of n values with its two-sided t-interval. Unknown (NaN bounds, `known` False) from one value or
    from values that are all equal: no spread was seen, so none is claimed."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    spread: float = math.nan  # the values' sample standard deviation (NaN below 2 values)

    @property
    def known(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)


def _no_spread(xs: Sequence[float]) -> bool:
    return math.isclose(max(xs), min(xs), rel_tol=1e-9, abs_tol=1e-12)


def mean_interval(values: Sequence[float], confidence: float = 0.95,
                  bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """Mean and t-interval (Student's t with n-1 degrees of freedom), cut to `bounds`, the range the true mean lies in
    (an accuracy in [0, 1], a difference of accuracies in [-1, 1]). Non-finite values are left out; no values give
    NaN; one value, or values all equal, an unknown interval (NaN bounds)."""
    xs = [float(v) for v in values if math.isfinite(v)]
    if not xs:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = math.fsum(xs) / len(xs)
    if len(xs) == 1:
        return Interval(mean, math.nan, math.nan, 1, confidence)
    if _no_spread(xs):  # zero width is not knowledge of the spread (and scipy would warn)
        return Interval(mean, math.nan, math.nan, len(xs), confidence, 0.0)
    low, high = stats.ttest_1samp(xs, 0.0).confidence_interval(confidence)
    return Interval(mean, max(float(low), bounds[0]), min(float(high), bounds[1]), len(xs), confidence,
                    float(stats.tstd(xs)))


@dataclass(frozen=True)
class PairedDifference:
    """a - b over the seeds both ran (paired t): the mean difference and its interval, the p-value of "no
    difference", the p-value of "not within the margin" (two one-sided tests), each also adjusted for the comparisons
    made (Holm) and the looks taken (`confirm.seeds: auto`), and the verdict for a."""

    difference: Interval
    p_value: float  # H0: a - b = 0 (two-sided paired t)
    p_equivalence: float  # H0: |a - b| >= margin (TOST: the larger of the two one-sided p-values)
    margin: float
    verdict: str  # better | worse | equivalent within m pt | undecided: cannot tell at 95% | too few seeds
    seeds: tuple[int, ...]
    p_adjusted: float = math.nan  # p_value after Holm over `comparisons` and Bonferroni over `looks`
    p_equivalence_adjusted: float = math.nan
    comparisons: int = 1
    looks: int = 1

    @property
    def decided(self) -> bool:
        return not is_undecided(self.verdict)


def ratio_interval(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> Interval:
    """`a` over `b` (a cost by seed, e.g. peak memory), paired over the seeds both measured: the geometric mean of the
    per-seed ratios with its t-interval, taken on the log ratios (a ratio's natural scale: x0.5 and x2 are as far
    from 1) and brought back. Unknown below 2 pairs or without spread, as `mean_interval`."""
    seeds = [s for s in a.keys() & b.keys() if math.isfinite(a[s]) and math.isfinite(b[s]) and a[s] > 0 and b[s] > 0]
    logs = mean_interval([math.log(a[s] / b[s]) for s in sorted(seeds)], confidence)
    if not math.isfinite(logs.mean):
        return logs
    return Interval(math.exp(logs.mean), math.exp(logs.low) if logs.known else math.nan,
                    math.exp(logs.high) if logs.known else math.nan, logs.n, confidence, logs.spread)


def _verdict(mean: float, p: float, p_equivalence: float, alpha: float, margin: float) -> str:
    """A significant difference first (better / worse), then equivalence within the margin, else undecided."""
    if p < alpha:
        return BETTER if mean > 0 else WORSE
    if p_equivalence < alpha:
        return equivalent(margin)
    return undecided(1 - alpha)


def paired_difference(a: dict[int, float], b: dict[int, float], confidence: float = 0.95,
                      margin: float = 0.0) -> PairedDifference:
    """`a`, `b`: accuracy by seed. Paired over the seeds both have a finite value for: the same seed gives both the
    same data order, so pairing removes what the seed does to both alike. Unadjusted: `holm` adjusts a family."""
    seeds = tuple(sorted(s for s in a.keys() & b.keys() if math.isfinite(a[s]) and math.isfinite(b[s])))
    diffs = [a[s] - b[s] for s in seeds]
    interval = mean_interval(diffs, confidence, DIFFERENCE_BOUNDS)
    if not interval.known:
        return PairedDifference(interval, math.nan, math.nan, margin, TOO_FEW, seeds)
    p_value = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    if margin > 0:
        above = float(stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue)
        below = float(stats.ttest_1samp(diffs, margin, alternative="less").pvalue)
        p_equivalence = max(above, below)
    else:
        p_equivalence = 1.0
    verdict = _verdict(interval.mean, p_value, p_equivalence, 1 - confidence, margin)
    return PairedDifference(interval, p_value, p_equivalence, margin, verdict, seeds, p_value, p_equivalence)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries are left out of the family and stay NaN)."""
    order = sorted((i for i, p in enumerate(p_values) if math.isfinite(p)), key=lambda i: p_values[i])
    m, adjusted, running = len(order), [math.nan] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm(gaps: Sequence[PairedDifference], confidence: float = 0.95, looks: int = 1) -> list[PairedDifference]:
    """The family of comparisons a summary prints, each verdict taken again on p-values adjusted by Holm over the
    family (and multiplied by `looks`: a Bonferroni split of alpha over the looks of a sequential design). The
    difference tests and the equivalence tests are adjusted as two families."""
    m = sum(1 for g in gaps if math.isfinite(g.p_value))
    p = holm_adjust([min(1.0, g.p_value * looks) if math.isfinite(g.p_value) else math.nan for g in gaps])
    q = holm_adjust([min(1.0, g.p_equivalence * looks) if math.isfinite(g.p_equivalence) else math.nan
                     for g in gaps])
    out = []
    for g, p_adj, q_adj in zip(gaps, p, q):
        verdict = g.verdict if not math.isfinite(p_adj) else _verdict(g.difference.mean, p_adj, q_adj,
                                                                       1 - confidence, g.margin)
        out.append(replace(g, p_adjusted=p_adj, p_equivalence_adjusted=q_adj, verdict=verdict, comparisons=max(m, 1),
                           looks=looks))
    return out


def seeds_to_decide(gap: PairedDifference, confidence: float = 0.95, comparisons: int = 1,
                    looks: int = 1) -> int | None:
    """About how many paired seeds the observed mean and spread would need for a verdict at the adjusted level (the
    smaller of: the interval leaving 0, the interval fitting in the margin). None when the spread is unknown or more
    than MAX_SEEDS_ESTIMATE would be needed."""
    d, s = gap.difference.mean, gap.difference.spread
    if not (math.isfinite(d) and math.isfinite(s) and s > 0):
        return None
    alpha = (1 - confidence) / max(1, comparisons) / max(1, looks)
    for n in range(max(2, gap.difference.n), MAX_SEEDS_ESTIMATE + 1):
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * s / math.sqrt(n)
        one_sided = float(stats.t.ppf(1 - alpha, n - 1)) * s / math.sqrt(n)
        if half < abs(d) or (gap.margin > 0 and abs(d) + one_sided < gap.margin):
            return n
    return None


def single_run_gap(single: float, values: Sequence[float], confidence: float = 0.95) -> Interval:
    """One run's value minus the mean of n other runs of the same configuration (the search run against its confirm
    runs: the selection bias), with its t-interval: the standard error of that difference is s*sqrt(1 + 1/n)."""
    xs = [float(v) for v in values if math.isfinite(v)]
    if not xs or not math.isfinite(single):
        return Interval(math.nan, math.nan, math.nan, len(xs), confidence)
    mean = math.fsum(xs) / len(xs)
    gap = single - mean
    if len(xs) < 2 or _no_spread(xs):
        return Interval(gap, math.nan, math.nan, len(xs), confidence)
    s = float(stats.tstd(xs))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(xs) - 1)) * s * math.sqrt(1 + 1 / len(xs))
    return Interval(gap, max(gap - half, -1.0), min(gap + half, 1.0), len(xs), confidence, s)


def format_p(p: float) -> str:
    """A p-value as printed: never 0 (below 0.001 it is `<0.001`), `n/a` when there is none."""
    if not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
