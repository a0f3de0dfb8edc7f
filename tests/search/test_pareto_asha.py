"""The multi-objective successive-halving scheduler's rung decisions, on hand-made results."""

from __future__ import annotations

import math
import pickle

from ray.tune.schedulers import TrialScheduler

from peftsweep.search.results.pareto import Point
from peftsweep.search.orchestration.pareto_asha import ParetoASHA, continues, epsilon_net, first_front_ends, fronts, rank

GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
OBJECTIVES = {"objectives": ("val_accuracy", "trainable_pct"), "modes": ("max", "min")}


def result(epoch: int, accuracy: float, pct: float) -> dict:
    return {"epoch": epoch, "val_accuracy": accuracy, "trainable_pct": pct}


def test_rungs_are_below_the_planned_epochs():
    assert ParetoASHA(**OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3).milestones == [1, 3]
    assert ParetoASHA(**OBJECTIVES, max_t=3, grace_period=1, reduction_factor=3).milestones == [1]
    assert ParetoASHA(**OBJECTIVES, max_t=8, grace_period=2, reduction_factor=2).milestones == [2, 4]


def test_a_cheap_mediocre_trial_no_cheaper_trial_beats_goes_on_a_dominated_one_stops():
    """The hung reproduction's case: IA3 at 0.823 with 0.081 % trainable is at the rung; prompt tuning arrives with
    0.683 at 0.020 %. Accuracy-only ASHA stops it (0.683 is below the rung's cutoff, 0.823); here it is on the first
    front and the cheapest there, so it goes on. An adapter at 0.70 with 0.35 % is dominated by IA3: stopped."""
    scheduler = ParetoASHA(**OBJECTIVES, max_t=3, grace_period=1, reduction_factor=3)
    assert scheduler.decide("ia3", result(1, 0.823, 0.081)) == GO  # the first at a rung always goes on
    assert scheduler.decide("prompt", result(1, 0.683, 0.020)) == GO
    assert scheduler.decide("adapter", result(1, 0.70, 0.35)) == STOP
    assert scheduler.decide("adapter", result(2, 0.71, 0.35)) == GO  # past the last rung: nothing more to decide
    assert [d[:2] for d in scheduler.decisions] == [("ia3", 1), ("prompt", 1), ("adapter", 1)]


def test_only_the_first_ceil_n_over_rf_of_a_rung_go_on():
    recorded = {"a": (0.9, 1.0), "b": (0.8, 0.1), "c": (0.85, 0.5), "d": (0.7, 0.05)}  # all on one front
    order = rank([Point(i, v[0], tuple(v[1:])) for i, v in recorded.items()])
    assert order[0] == "d"  # the cheapest first
    assert order[1] == "a"  # then the farthest from it: the most accurate end of the front
    assert [continues(i, recorded, 2) for i in order] == [True, True, False, False]
    assert continues("x", {"x": (0.1, 50.0)}, 3)  # alone at its rung


def test_non_dominated_sorting_and_the_epsilon_net():
    points = [Point("a", 0.9, (1.0,)), Point("b", 0.8, (2.0,)), Point("c", 0.7, (0.5,)), Point("d", 0.6, (3.0,))]
    assert [[p.id for p in f] for f in fronts(points)] == [["c", "a"], ["b"], ["d"]]
    line = [Point(str(i), 0.5 + 0.1 * i, (10.0 ** i,)) for i in range(5)]  # a front from 1 % to 10000 %
    assert [p.id for p in epsilon_net(line, (0.4, 4.0))] == ["0", "4", "2", "1", "3"]  # ends first, then the middle
    assert rank([Point("nan", float("nan"), (1.0,)), Point("ok", 0.5, (1.0,))]) == ["ok", "nan"]


def test_a_resumed_scheduler_decides_as_an_uninterrupted_one():
    """Rung records go out with Tune's saved experiment state (the callback) and come back on Tuner.restore."""
    stream = [("t1", result(1, 0.60, 0.1)), ("t2", result(1, 0.80, 1.0)), ("t3", result(1, 0.55, 0.5)),
              ("t1", result(2, 0.62, 0.1)), ("t1", result(3, 0.66, 0.1)), ("t4", result(1, 0.90, 0.05)),
              ("t2", result(3, 0.85, 1.0)), ("t5", result(1, 0.58, 0.2)), ("t4", result(3, 0.91, 0.05)),
              ("t5", result(3, 0.59, 0.2)), ("t6", result(1, 0.95, 0.01))]
    whole = ParetoASHA(**OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)
    expected = [whole.decide(t, r) for t, r in stream]
    assert STOP in expected and GO in expected
    first = ParetoASHA(**OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)
    got = [first.decide(t, r) for t, r in stream[:5]]
    saved = pickle.loads(pickle.dumps(first.saver.get_state()))
    resumed = ParetoASHA(**OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)  # as Tune builds it again from the Tuner
    resumed.saver.set_state(saved)
    # a continued trial replays its last epoch: already recorded at that rung, so no second decision
    assert resumed.decide("t1", result(3, 0.66, 0.1)) == GO
    got += [resumed.decide(t, r) for t, r in stream[5:]]
    assert got == expected
    assert resumed.rungs == whole.rungs


def test_tune_saves_the_rung_records_and_restore_brings_them_back(tmp_path):
    """Through Ray Tune itself: the scheduler and its callback are unpickled together by Tuner.restore, and Tune gives
    the callback its saved state back, so the restored scheduler holds every rung record."""
    import ray
    from ray import tune

    def trainable(config):
        for epoch in range(1, 4):
            tune.report({"epoch": epoch, "val_accuracy": config["accuracy"], "trainable_pct": 1.0})

    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        scheduler = ParetoASHA(**OBJECTIVES, max_t=3, grace_period=1, reduction_factor=2)
        tune.Tuner(trainable, param_space={"accuracy": tune.grid_search([0.5, 0.9, 0.4])},
                   tune_config=tune.TuneConfig(scheduler=scheduler),
                   run_config=tune.RunConfig(name="x", storage_path=str(tmp_path), verbose=0,
                                             callbacks=[scheduler.saver])).fit()
        assert [went_on for *_, went_on in scheduler.decisions][-1] is False  # 0.4 after 0.9 at one cost: stopped
        restored = tune.Tuner.restore(str(tmp_path / "x"), trainable)
        again = restored._local_tuner._tune_config.scheduler
        assert again is restored._local_tuner._run_config.callbacks[-1].scheduler and again.rungs[1] == {}
        restored.fit()  # every trial had ended: nothing runs, the state is read back
        assert again.rungs == scheduler.rungs
    finally:
        ray.shutdown()


def test_the_most_accurate_end_of_the_front_goes_on_n_2():
    """The issue's rung: prompt tuning 0.20 at 0.01 %, full fine-tuning 0.85 at 100 %. Both are on the first front;
    it used to keep only the cheapest (ceil(2/3) = 1) and stop the full fine-tune."""
    for first, second in (("prompt", "full"), ("full", "prompt")):
        scheduler = ParetoASHA(**OBJECTIVES, max_t=3, grace_period=1, reduction_factor=3)
        points = {"prompt": result(1, 0.20, 0.01), "full": result(1, 0.85, 100.0)}
        assert scheduler.decide(first, points[first]) == GO
        assert scheduler.decide(second, points[second]) == GO


def test_a_trial_at_the_floor_ranks_last_and_the_most_accurate_goes_on_n_6():
    """Six results at a rung, floor 0.50: a trial exactly at the floor is the cheapest of all (it used to rank first
    and go on while the most accurate trial stopped); it ranks last now, and both ends of the front go on."""
    recorded = {"at-floor": (0.50, 0.001), "ia3": (0.60, 0.05), "adapter": (0.58, 0.5), "lora": (0.70, 0.6),
                "loha": (0.65, 2.0), "full": (0.86, 100.0)}
    old_order = rank([Point(i, v[0], tuple(v[1:])) for i, v in recorded.items()])
    assert old_order[0] == "at-floor"  # without the floor: the cheapest of the first front
    order = rank([Point(i, v[0], tuple(v[1:])) for i, v in recorded.items()], floor=0.50)
    assert order[-1] == "at-floor" and order[:2] == ["ia3", "full"]
    assert continues("full", recorded, 3, floor=0.50) and continues("ia3", recorded, 3, floor=0.50)
    assert not continues("at-floor", recorded, 3, floor=0.50)
    assert not continues("adapter", recorded, 3, floor=0.50)  # dominated by ia3
    # through the scheduler, results arriving one by one: the floor-level one is stopped once others arrive
    scheduler = ParetoASHA(**OBJECTIVES, max_t=3, grace_period=1, reduction_factor=3, floor=0.50)
    decisions = {i: scheduler.decide(i, result(1, *v)) for i, v in recorded.items()}
    assert decisions["full"] == GO and decisions["ia3"] == GO and decisions["adapter"] == STOP


class Live:
    """The part of Tune's controller the scheduler asks: the trials that are live."""

    def __init__(self, *trials):
        self.trials = list(trials)

    def get_live_trials(self):
        return self.trials


def trial(trial_id: str, method: str, status: str = "RUNNING"):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"method": method}, status=status)


def test_the_last_running_full_fine_tune_is_kept_until_one_has_finished():
    def is_full(config):
        return config.get("method") == "full"

    scheduler = ParetoASHA(**OBJECTIVES, max_t=3, grace_period=1, reduction_factor=3, is_reference=is_full)
    lora, full_a, full_b = trial("lora", "lora"), trial("full-a", "full"), trial("full-b", "full")
    live = Live(lora, full_a, full_b)
    assert scheduler.on_trial_result(live, lora, result(1, 0.90, 0.5)) == GO
    # full-a is dominated (less accurate, costlier), but full-b is running too: it may stop
    assert scheduler.on_trial_result(live, full_a, result(1, 0.80, 100.0)) == STOP
    live.trials.remove(full_a)
    # full-b is dominated as well, and now the last running full fine-tune: kept, so the sweep has a reference
    assert scheduler.decide("probe", result(1, 0.79, 100.0)) == STOP  # what the rung alone would say
    assert scheduler.on_trial_result(live, full_b, result(1, 0.79, 100.0)) == GO
    scheduler.on_trial_complete(live, full_b, result(3, 0.85, 100.0))
    full_c = trial("full-c", "full")
    live.trials.append(full_c)
    assert scheduler.on_trial_result(live, full_c, result(1, 0.70, 100.0)) == STOP  # a reference has finished
    state = pickle.loads(pickle.dumps(scheduler.saver.get_state()))
    again = ParetoASHA(**OBJECTIVES, max_t=3, grace_period=1, reduction_factor=3, is_reference=is_full)
    again.saver.set_state(state)
    assert again.reference_finished


def test_the_objectives_are_parameters():
    scheduler = ParetoASHA(max_t=3, grace_period=1, reduction_factor=3, objectives=("val_f1", "checkpoint_mb"),
                           modes=("max", "min"))
    scheduler.decide("a", {"epoch": 1, "val_f1": 0.9, "checkpoint_mb": 10.0, "val_accuracy": 0.1})
    assert scheduler.rungs[1]["a"] == (0.9, 10.0)
    import pytest

    with pytest.raises(ValueError):
        ParetoASHA(max_t=3, objectives=("val_accuracy", "trainable_pct"), modes=("min", "min"))


def test_three_objectives_keep_the_cheapest_in_each_cost_and_the_most_accurate():
    # a front of three: cheapest in memory, cheapest in time, most accurate; then a dominated point
    recorded = {"low-memory": (0.70, 100.0, 90.0), "fast": (0.72, 900.0, 10.0), "accurate": (0.90, 800.0, 80.0),
                "dominated": (0.60, 950.0, 95.0)}
    points = [Point(i, v[0], tuple(v[1:])) for i, v in recorded.items()]
    assert first_front_ends(points) == {"low-memory", "fast", "accurate"}
    assert rank(points)[-1] == "dominated"
    for trial in ("low-memory", "fast", "accurate"):
        assert continues(trial, recorded, reduction_factor=4)
    assert not continues("dominated", recorded, reduction_factor=4)
    scheduler = ParetoASHA(objectives=("val_accuracy", "peak_memory_mb", "train_seconds"), modes=("max", "min", "min"),
                           max_t=3, grace_period=1, reduction_factor=3)
    assert scheduler.decide("t1", {"epoch": 1, "val_accuracy": 0.7, "peak_memory_mb": 100.0,
                                   "train_seconds": 9.0}) == "CONTINUE"
    assert scheduler.rungs[1]["t1"] == (0.7, 100.0, 9.0)


def test_the_quick_quota_test_agrees_with_the_whole_ranking():
    """within_quota works out only the fronts up to the trial's (the scheduler's decision at a rung of a thousand
    results): on random rungs, with ties, NaNs, a floor and one or two costs, it says what rank()'s index says."""
    import random

    from peftsweep.search.orchestration.pareto_asha import within_quota

    rng = random.Random(0)
    for _ in range(300):
        n, k = rng.randint(2, 40), rng.choice([1, 2])
        points = [Point(f"t{i}", float("nan") if rng.random() < 0.05 else rng.choice([0.1, 0.5, 0.9, rng.random()]),
                        tuple(rng.choice([0.5, 2.0, rng.random() * 10 + 0.01]) for _ in range(k))) for i in range(n)]
        floor = rng.choice([None, 0.2, 0.5])
        order = rank(points, floor)
        for quota in {1, math.ceil(n / 3), max(1, n // 2)}:
            assert [within_quota(p.id, points, floor, quota) for p in points] == [
                order.index(p.id) < quota for p in points]
