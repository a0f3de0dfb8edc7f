import math

import pytest

from peftsweep.search.pareto import HV_REFERENCE_PCT, Point, hypervolume, pareto_front


def ids(points):
    return [p.id for p in points]


def test_single_point_is_the_front():
    assert ids(pareto_front([Point("a", 0.8, 1.0)])) == ["a"]


def test_empty():
    assert pareto_front([]) == [] and hypervolume([]) == 0.0


def test_all_dominated_but_one():
    points = [Point("best", 0.9, 0.1), Point("b", 0.8, 0.2), Point("c", 0.9, 1.0), Point("d", 0.5, 50.0)]
    assert ids(pareto_front(points)) == ["best"]


def test_trade_off_keeps_both_ends_cheapest_first():
    points = [Point("full", 0.93, 100.0), Point("prompt", 0.84, 0.04), Point("lora", 0.90, 0.3),
              Point("worse-lora", 0.89, 0.5)]
    assert ids(pareto_front(points)) == ["prompt", "lora", "full"]


def test_ties_on_one_axis_are_dominated():
    # same cost, lower accuracy; same accuracy, higher cost: both dominated
    points = [Point("a", 0.9, 1.0), Point("same-cost", 0.8, 1.0), Point("same-acc", 0.9, 2.0)]
    assert ids(pareto_front(points)) == ["a"]


def test_exact_duplicates_both_stay():
    points = [Point("a", 0.9, 1.0), Point("b", 0.9, 1.0), Point("c", 0.95, 5.0)]
    assert sorted(ids(pareto_front(points))) == ["a", "b", "c"]


def test_non_finite_points_are_ignored():
    points = [Point("nan", math.nan, 0.01), Point("ok", 0.5, 1.0)]
    assert ids(pareto_front(points)) == ["ok"]


def test_hypervolume_by_hand():
    one = [Point("a", 0.8, 1.0)]
    assert hypervolume(one) == pytest.approx(0.8 * (math.log10(HV_REFERENCE_PCT) - 0))
    two = [Point("a", 0.5, 0.1), Point("b", 0.8, 10.0)]
    # 0.5 over log10 0.1..10 (2 decades) + 0.8 over 10..1000 (2 decades)
    assert hypervolume(two) == pytest.approx(0.5 * 2 + 0.8 * 2)
    assert hypervolume(two + [Point("dominated", 0.4, 50.0)]) == pytest.approx(hypervolume(two))


def test_hypervolume_grows_when_the_front_improves():
    base = [Point("a", 0.8, 1.0)]
    assert hypervolume(base + [Point("cheaper", 0.7, 0.01)]) > hypervolume(base)
