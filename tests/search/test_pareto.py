import math

import pytest

from peftsweep.search.results.pareto import HV_REFERENCE_PCT, Point, hypervolume, pareto_front


def ids(points):
    return [p.id for p in points]


def test_single_point_is_the_front():
    assert ids(pareto_front([Point("a", 0.8, (1.0,))])) == ["a"]


def test_empty():
    assert pareto_front([]) == [] and hypervolume([]) == 0.0


def test_all_dominated_but_one():
    points = [Point("best", 0.9, (0.1,)), Point("b", 0.8, (0.2,)), Point("c", 0.9, (1.0,)), Point("d", 0.5, (50.0,))]
    assert ids(pareto_front(points)) == ["best"]


def test_trade_off_keeps_both_ends_cheapest_first():
    points = [Point("full", 0.93, (100.0,)), Point("prompt", 0.84, (0.04,)), Point("lora", 0.90, (0.3,)),
              Point("worse-lora", 0.89, (0.5,))]
    assert ids(pareto_front(points)) == ["prompt", "lora", "full"]


def test_ties_on_one_axis_are_dominated():
    # same cost, lower accuracy; same accuracy, higher cost: both dominated
    points = [Point("a", 0.9, (1.0,)), Point("same-cost", 0.8, (1.0,)), Point("same-acc", 0.9, (2.0,))]
    assert ids(pareto_front(points)) == ["a"]


def test_exact_duplicates_both_stay():
    points = [Point("a", 0.9, (1.0,)), Point("b", 0.9, (1.0,)), Point("c", 0.95, (5.0,))]
    assert sorted(ids(pareto_front(points))) == ["a", "b", "c"]


def test_non_finite_points_are_ignored():
    points = [Point("nan", math.nan, (0.01,)), Point("ok", 0.5, (1.0,))]
    assert ids(pareto_front(points)) == ["ok"]


def test_hypervolume_by_hand():
    one = [Point("a", 0.8, (1.0,))]
    assert hypervolume(one) == pytest.approx(0.8 * (math.log10(HV_REFERENCE_PCT) - 0))
    two = [Point("a", 0.5, (0.1,)), Point("b", 0.8, (10.0,))]
    # 0.5 over log10 0.1..10 (2 decades) + 0.8 over 10..1000 (2 decades)
    assert hypervolume(two) == pytest.approx(0.5 * 2 + 0.8 * 2)
    assert hypervolume(two + [Point("dominated", 0.4, (50.0,))]) == pytest.approx(hypervolume(two))


def test_hypervolume_grows_when_the_front_improves():
    base = [Point("a", 0.8, (1.0,))]
    assert hypervolume(base + [Point("cheaper", 0.7, (0.01,))]) > hypervolume(base)


def test_hypervolume_from_the_floor_counts_only_area_above_it():
    two = [Point("a", 0.5, (0.1,)), Point("b", 0.8, (10.0,))]
    # from a floor of 0.4: 0.1 over 2 decades + 0.4 over 2 decades
    assert hypervolume(two, reference_accuracy=0.4) == pytest.approx(0.1 * 2 + 0.4 * 2)
    assert hypervolume([Point("below", 0.3, (0.1,))], reference_accuracy=0.4) == 0.0


def test_crossing_the_floor_adds_at_most_the_new_points_own_area_above_it():
    # the case: floor 0.5, prompt tuning at 0.500 (not above) then at 0.5025 (one validation example more)
    grid = [Point("lora", 0.80, (0.5,)), Point("full", 0.85, (100.0,))]
    at, above = Point("prompt", 0.500, (0.002,)), Point("prompt", 0.5025, (0.002,))
    before = hypervolume(grid + [at], reference_accuracy=0.5)
    after = hypervolume(grid + [above], reference_accuracy=0.5)
    own = (0.5025 - 0.5) * (math.log10(HV_REFERENCE_PCT) - math.log10(0.002))
    assert 0 < after - before <= own + 1e-12  # from accuracy 0 it jumped by 0.5 x its log-width (+42 %)


def test_a_point_at_zero_cost_never_takes_area_away():
    front = [Point("a", 0.6, (0.01,)), Point("b", 0.9, (10.0,))]
    base = hypervolume(front)
    for cost in (0.0, -1.0):
        assert hypervolume(front + [Point("free", 0.7, (cost,))]) >= base  # used to drop to 0.0
        assert math.isfinite(hypervolume(front + [Point("free", 0.7, (cost,))]))
    assert hypervolume([Point("free", 0.7, (0.0,))]) == pytest.approx(0.7 * (math.log10(HV_REFERENCE_PCT) + 6))


def brute_force_front(points):
    """The definition, pair by pair: a point is on the front when no other is at least as good in every objective
    and better in one."""
    def beats(a, b):
        at_least = a.accuracy >= b.accuracy and all(x <= y for x, y in zip(a.costs, b.costs))
        return at_least and (a.accuracy > b.accuracy or any(x < y for x, y in zip(a.costs, b.costs)))
    return {p.id for p in points if not any(beats(q, p) for q in points if q is not p)}


def test_a_front_over_three_objectives_is_the_definitions():
    import random

    rng = random.Random(0)
    for trial in range(30):
        # few distinct values, so that ties and exact duplicates occur
        points = [Point(str(i), rng.choice([0.5, 0.6, 0.7, 0.8]), (rng.choice([1.0, 2.0, 4.0]), rng.choice([10.0, 20.0])))
                  for i in range(rng.randint(1, 25))]
        assert set(ids(pareto_front(points))) == brute_force_front(points), trial


def test_three_objective_hypervolume_by_hand():
    # logs from the reference (acc 0, costs 10 and 10 -> log 1, 1): A's box 0.5 x 1 x 1, B's 1.0 x 0.5 x 0.5, shared
    # 0.5 x 0.5 x 0.5: 0.5 + 0.25 - 0.125
    a, b = Point("a", 0.5, (1.0, 1.0)), Point("b", 1.0, (10 ** 0.5, 10 ** 0.5))
    assert hypervolume([a, b], reference_costs=(10.0, 10.0)) == pytest.approx(0.625)
    assert hypervolume([a, b], reference_costs=(10.0, 10.0), reference_accuracy=0.5) == pytest.approx(0.125)
    # a second cost the same for every point: the two-objective area times its log width
    flat = [Point("x", 0.6, (0.1, 1.0)), Point("y", 0.9, (10.0, 1.0))]
    assert hypervolume(flat, reference_costs=(1000.0, 100.0)) == pytest.approx(
        2 * hypervolume([Point(p.id, p.accuracy, p.costs[:1]) for p in flat]))


def test_a_signed_cost_is_measured_on_a_linear_axis():
    # forgetting can be 0 or below: A (acc 0.5, forgetting -0.2) and B (acc 0.8, forgetting 0.3), reference 0.5:
    # a staircase: A's step from -0.2 to B's 0.3 (0.5 wide) x 0.5 high, B's from 0.3 to 0.5 (0.2 wide) x 0.8 high
    a, b = Point("a", 0.5, (-0.2,)), Point("b", 0.8, (0.3,))
    assert hypervolume([a, b], reference_costs=(0.5,), log_axes=(False,)) == pytest.approx(0.5 * 0.5 + 0.2 * 0.8)
    # beside trainable % (log): the linear side of each box is as above
    two = [Point("a", 0.5, (1.0, -0.2))]
    assert hypervolume(two, reference_costs=(10.0, 0.5), log_axes=(True, False)) == pytest.approx(0.5 * 1 * 0.7)
