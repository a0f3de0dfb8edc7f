"""The confirm stage's statistics, against numbers computed by hand (t quantiles from a printed table)."""

from __future__ import annotations

import math

import pytest

from peftsweep.search.statistics import BETTER, TOO_FEW, WORSE, mean_interval, paired_difference

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
    same = mean_interval([0.5, 0.5, 0.5])
    assert (same.low, same.mean, same.high) == (0.5, 0.5, 0.5) and same.known
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


def test_a_noisy_gap_is_indistinguishable():
    a = {1: 0.82, 2: 0.80, 3: 0.81}
    b = {1: 0.80, 2: 0.81, 3: 0.81}  # differences +0.02, -0.01, 0.00
    gap = paired_difference(a, b)
    sd = math.sqrt(((0.02 - 1 / 300) ** 2 + (-0.01 - 1 / 300) ** 2 + (1 / 300) ** 2) / 2)
    assert gap.difference.high - gap.difference.mean == pytest.approx(T_975_DF2 * sd / math.sqrt(3), abs=1e-6)
    assert gap.difference.low < 0 < gap.difference.high
    assert gap.verdict == "indistinguishable at 95%" and gap.p_value > 0.5


def test_pairing_uses_only_the_seeds_both_ran():
    a = {1: 0.9, 2: 0.8, 3: 0.85}
    b = {2: 0.7, 3: 0.75, 4: 0.1}  # seed 4 has no partner, seed 1 neither
    gap = paired_difference(a, b)
    assert gap.seeds == (2, 3) and gap.difference.mean == pytest.approx(0.1)
    assert gap.verdict == BETTER  # identical differences: a zero-width interval above 0
    assert paired_difference({1: 0.9}, {1: 0.8}).verdict == TOO_FEW


def test_an_interval_is_cut_to_where_the_mean_can_be():
    wide = mean_interval([0.3, 0.9])  # t(0.975, 1) = 12.7: from far below 0 to far above 1
    assert wide.low < 0 and wide.high > 1
    cut = mean_interval([0.3, 0.9], bounds=(0.0, 1.0))
    assert (cut.low, cut.mean, cut.high) == (0.0, pytest.approx(0.6), 1.0)
    gap = paired_difference({1: 0.9, 2: 0.3}, {1: 0.1, 2: 0.6})  # differences +0.8, -0.3
    assert gap.difference.low == -1.0 and gap.difference.high == 1.0
