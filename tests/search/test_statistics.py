"""The confirm stage's statistics, against numbers computed by hand (t quantiles from a printed table)."""

from __future__ import annotations

import math

import pytest

from peftsweep.search.results.statistics import (BETTER, TOO_FEW, WORSE, equivalent, format_p, holm, holm_adjust,
                                         mean_interval, paired_difference, seeds_to_decide, single_run_gap, undecided)

T_975_DF2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom (any printed t table)
T_95_DF3 = 2.353363  # 95% quantile, 3 degrees of freedom: a 90% two-sided interval


def test_mean_interval_of_three_values_is_the_t_interval():
    i = mean_interval([0.80, 0.82, 0.84])
    half = T_975_DF2 * 0.02 / math.sqrt(3)  # sample sd 0.02
    assert i.n == 3 and i.known
    assert i.mean == pytest.approx(0.82)
    assert (i.low, i.high) == (pytest.approx(0.82 - half, abs=1e-6), pytest.approx(0.82 + half, abs=1e-6))


def test_mean_interval_at_another_confidence():
    i = mean_interval([1.0, 2.0, 3.0, 6.0], confidence=0.90)
    sd = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)
    assert i.mean == 3.0 and i.high - 3.0 == pytest.approx(T_95_DF3 * sd / 2, abs=1e-5)


def test_mean_interval_edge_cases():
    assert mean_interval([]).n == 0 and math.isnan(mean_interval([]).mean)
    one = mean_interval([0.7])
    assert one.mean == 0.7 and not one.known and math.isnan(one.low)
    same = mean_interval([0.9, 0.9, 0.9])  # [0.9, 0.9] would claim a spread of 0 from three values: not known
    assert same.mean == 0.9 and not same.known and math.isnan(same.low) and math.isnan(same.high)
    assert mean_interval([0.6, math.nan, 0.8]).n == 2  # a missing accuracy is left out, not averaged as NaN


def test_a_consistent_paired_gain_is_better_and_its_mirror_worse():
    a = {1000: 0.90, 2000: 0.91, 3000: 0.92}
    b = {1000: 0.80, 2000: 0.82, 3000: 0.81}  # differences 0.10, 0.09, 0.11: mean 0.10, sd 0.01
    gap = paired_difference(a, b)
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert gap.difference.mean == pytest.approx(0.10)
    assert gap.difference.low == pytest.approx(0.10 - half, abs=1e-6) and gap.verdict == BETTER
    assert gap.p_value < 0.01 and gap.seeds == (1000, 2000, 3000)
    assert paired_difference(b, a).verdict == WORSE


def test_a_noisy_gap_is_undecided_and_says_so():
    a = {1: 0.82, 2: 0.80, 3: 0.81}
    b = {1: 0.80, 2: 0.81, 3: 0.81}  # differences +0.02, -0.01, 0.00
    gap = paired_difference(a, b)
    sd = math.sqrt(((0.02 - 1 / 300) ** 2 + (-0.01 - 1 / 300) ** 2 + (1 / 300) ** 2) / 2)
    assert gap.difference.high - gap.difference.mean == pytest.approx(T_975_DF2 * sd / math.sqrt(3), abs=1e-6)
    assert gap.difference.low < 0 < gap.difference.high
    assert gap.verdict == undecided(0.95) == "undecided: cannot tell at 95%" and gap.p_value > 0.5


def test_pairing_uses_only_the_seeds_both_ran():
    a = {1: 0.9, 2: 0.8, 3: 0.85}
    b = {2: 0.7, 3: 0.75, 4: 0.1}  # seed 4 has no partner, seed 1 neither
    gap = paired_difference(a, b)
    assert gap.seeds == (2, 3) and gap.difference.mean == pytest.approx(0.1)
    assert gap.verdict == TOO_FEW  # identical differences: no spread seen, nothing claimed
    assert paired_difference({1: 0.9}, {1: 0.8}).verdict == TOO_FEW


def test_tied_differences_give_no_certain_verdict_and_no_p_of_zero():
    # the case: 431/500 vs 430/500 on seed 1000, 437 vs 436 on seed 2000 (both +0.002)
    gap = paired_difference({1000: 431 / 500, 2000: 437 / 500}, {1000: 430 / 500, 2000: 436 / 500})
    assert gap.verdict == TOO_FEW and not gap.difference.known
    assert math.isnan(gap.p_value) and format_p(gap.p_value) == "n/a"
    assert format_p(1e-9) == "<0.001" and format_p(0.0) == "<0.001" and format_p(0.0421) == "0.042"


def test_false_verdicts_with_no_true_gap_stay_near_the_nominal_rate():
    """Two seeds, accuracies multiples of 1/200 (ties common), no true gap: at most ~5 % false verdicts (the old
    zero-width intervals gave 6.5-12.6 %)."""
    import random

    rng, false, runs = random.Random(0), 0, 4000
    for _ in range(runs):
        a = {s: round(rng.gauss(0.8, 0.01) * 200) / 200 for s in (1, 2)}
        b = {s: round(rng.gauss(0.8, 0.01) * 200) / 200 for s in (1, 2)}
        false += paired_difference(a, b).verdict in (BETTER, WORSE)
    assert false / runs <= 0.055


def test_equivalence_by_two_one_sided_tests():
    a = {1: 0.800, 2: 0.803, 3: 0.797, 4: 0.801, 5: 0.799}
    b = {1: 0.801, 2: 0.801, 3: 0.799, 4: 0.800, 5: 0.800}  # differences -0.001, +0.002, -0.002, +0.001, -0.001
    gap = paired_difference(a, b, margin=0.01)
    assert gap.verdict == equivalent(0.01) == "equivalent within 1 pt" and gap.p_equivalence < 0.05
    # the 90 % interval lies inside [-0.01, +0.01]: the same decision as TOST at 5 %
    ninety = mean_interval([a[s] - b[s] for s in a], 0.90)
    assert -0.01 < ninety.low and ninety.high < 0.01
    assert paired_difference(a, b, margin=0.0).verdict == undecided(0.95)  # no margin: never equivalent
    wide = paired_difference({1: 0.8, 2: 0.9, 3: 0.7}, {1: 0.85, 2: 0.8, 3: 0.8}, margin=0.01)
    assert wide.verdict == undecided(0.95)  # the demo's case: a wide interval is "cannot tell", not "as good"


def test_holm_by_hand():
    # p = 0.01, 0.04, 0.03, 0.005 -> sorted 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), running maximum
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.2, math.nan]) == [pytest.approx(0.2), pytest.approx(math.nan, nan_ok=True)]


def test_holm_turns_a_lone_significant_gap_of_many_into_undecided():
    strong = paired_difference({1: 0.90, 2: 0.91, 3: 0.92}, {1: 0.80, 2: 0.82, 3: 0.81})  # p ~ 0.003
    weak = paired_difference({1: 0.85, 2: 0.86, 3: 0.855}, {1: 0.84, 2: 0.84, 3: 0.84})  # p ~ 0.035
    assert strong.verdict == weak.verdict == BETTER
    noise = [paired_difference({1: 0.8, 2: 0.81, 3: 0.8}, {1: 0.81, 2: 0.8, 3: 0.8})] * 6
    adjusted = holm([strong, weak, *noise])
    assert adjusted[0].verdict == BETTER and adjusted[0].comparisons == 8
    assert adjusted[1].verdict == undecided(0.95) and adjusted[1].p_adjusted == pytest.approx(7 * weak.p_value)
    looked = holm([weak], looks=5)  # alpha split over five planned looks
    assert looked[0].p_adjusted == pytest.approx(min(1, 5 * weak.p_value)) and looked[0].verdict == undecided(0.95)


def test_seeds_to_decide_grow_with_the_spread():
    narrow = paired_difference({1: 0.85, 2: 0.80, 3: 0.84}, {1: 0.80, 2: 0.80, 3: 0.80})
    wide = paired_difference({1: 0.95, 2: 0.70, 3: 0.84}, {1: 0.80, 2: 0.80, 3: 0.80})
    assert narrow.verdict == wide.verdict == undecided(0.95)
    n_narrow, n_wide = seeds_to_decide(narrow), seeds_to_decide(wide)
    assert 3 < n_narrow < n_wide
    assert seeds_to_decide(paired_difference({1: 0.9}, {1: 0.8})) is None  # no spread known


def test_the_selection_bias_interval_is_one_run_minus_a_mean():
    gap = single_run_gap(0.90, [0.80, 0.82, 0.84])  # sd 0.02, n 3: SE 0.02 * sqrt(1 + 1/3)
    half = T_975_DF2 * 0.02 * math.sqrt(1 + 1 / 3)
    assert gap.mean == pytest.approx(0.08) and gap.high - gap.mean == pytest.approx(half, abs=1e-6)
    assert not single_run_gap(0.9, [0.8, 0.8]).known and single_run_gap(0.9, [0.8, 0.8]).mean == pytest.approx(0.1)


def test_an_interval_is_cut_to_where_the_mean_can_be():
    wide = mean_interval([0.3, 0.9])  # t(0.975, 1) = 12.7: from far below 0 to far above 1
    assert wide.low < 0 and wide.high > 1
    cut = mean_interval([0.3, 0.9], bounds=(0.0, 1.0))
    assert (cut.low, cut.mean, cut.high) == (0.0, pytest.approx(0.6), 1.0)
    gap = paired_difference({1: 0.9, 2: 0.3}, {1: 0.1, 2: 0.6})  # differences +0.8, -0.3
    assert gap.difference.low == -1.0 and gap.difference.high == 1.0


def test_a_cost_ratio_is_the_geometric_mean_of_the_paired_ratios_with_a_t_interval_on_their_logs():
    from scipy import stats

    from peftsweep.search.results.statistics import ratio_interval

    lora, full = {1: 50.0, 2: 60.0, 3: 45.0}, {1: 100.0, 2: 100.0, 3: 100.0}
    logs = [math.log(0.5), math.log(0.6), math.log(0.45)]
    mean, sd = sum(logs) / 3, stats.tstd(logs)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    ratio = ratio_interval(lora, full)
    assert ratio.mean == pytest.approx(math.exp(mean)) and ratio.n == 3
    assert (ratio.low, ratio.high) == (pytest.approx(math.exp(mean - half)), pytest.approx(math.exp(mean + half)))
    alike = ratio_interval({1: 50.0, 2: 60.0}, {1: 100.0, 2: 120.0})  # 0.5 on both seeds: no spread, no interval
    assert alike.mean == pytest.approx(0.5) and not alike.known
    assert ratio_interval({1: 50.0}, {2: 100.0}).n == 0  # no shared seed
