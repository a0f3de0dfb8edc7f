"""The multi-objective successive-halving scheduler's rung decisions, on hand-made results."""

from __future__ import annotations

import pickle

from ray.tune.schedulers import TrialScheduler

from peftsweep.search.pareto import Point
from peftsweep.search.pareto_asha import ParetoASHA, continues, epsilon_net, fronts, rank

GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def result(epoch: int, accuracy: float, pct: float) -> dict:
    return {"epoch": epoch, "val_accuracy": accuracy, "trainable_pct": pct}


def test_rungs_are_below_the_planned_epochs():
    assert ParetoASHA(max_t=9, grace_period=1, reduction_factor=3).milestones == [1, 3]
    assert ParetoASHA(max_t=3, grace_period=1, reduction_factor=3).milestones == [1]
    assert ParetoASHA(max_t=8, grace_period=2, reduction_factor=2).milestones == [2, 4]


def test_a_cheap_mediocre_trial_no_cheaper_trial_beats_goes_on_a_dominated_one_stops():
    """The hung reproduction's case: IA3 at 0.823 with 0.081 % trainable is at the rung; prompt tuning arrives with
    0.683 at 0.020 %. Accuracy-only ASHA stops it (0.683 is below the rung's cutoff, 0.823); here it is on the first
    front and the cheapest there, so it goes on. An adapter at 0.70 with 0.35 % is dominated by IA3: stopped."""
    scheduler = ParetoASHA(max_t=3, grace_period=1, reduction_factor=3)
    assert scheduler.decide("ia3", result(1, 0.823, 0.081)) == GO  # the first at a rung always goes on
    assert scheduler.decide("prompt", result(1, 0.683, 0.020)) == GO
    assert scheduler.decide("adapter", result(1, 0.70, 0.35)) == STOP
    assert scheduler.decide("adapter", result(2, 0.71, 0.35)) == GO  # past the last rung: nothing more to decide
    assert [d[:2] for d in scheduler.decisions] == [("ia3", 1), ("prompt", 1), ("adapter", 1)]


def test_only_the_first_ceil_n_over_rf_of_a_rung_go_on():
    recorded = {"a": (0.9, 1.0), "b": (0.8, 0.1), "c": (0.85, 0.5), "d": (0.7, 0.05)}  # all on one front
    order = rank([Point(i, *v) for i, v in recorded.items()])
    assert order[0] == "d"  # the cheapest first
    assert order[1] == "a"  # then the farthest from it: the most accurate end of the front
    assert [continues(i, recorded, 2) for i in order] == [True, True, False, False]
    assert continues("x", {"x": (0.1, 50.0)}, 3)  # alone at its rung


def test_non_dominated_sorting_and_the_epsilon_net():
    points = [Point("a", 0.9, 1.0), Point("b", 0.8, 2.0), Point("c", 0.7, 0.5), Point("d", 0.6, 3.0)]
    assert [[p.id for p in f] for f in fronts(points)] == [["c", "a"], ["b"], ["d"]]
    line = [Point(str(i), 0.5 + 0.1 * i, 10.0 ** i) for i in range(5)]  # a front from 1 % to 10000 %
    assert [p.id for p in epsilon_net(line, (0.4, 4.0))] == ["0", "4", "2", "1", "3"]  # ends first, then the middle
    assert rank([Point("nan", float("nan"), 1.0), Point("ok", 0.5, 1.0)]) == ["ok", "nan"]


def test_a_resumed_scheduler_decides_as_an_uninterrupted_one():
    """Rung records go out with Tune's saved experiment state (the callback) and come back on Tuner.restore."""
    stream = [("t1", result(1, 0.60, 0.1)), ("t2", result(1, 0.80, 1.0)), ("t3", result(1, 0.55, 0.5)),
              ("t1", result(2, 0.62, 0.1)), ("t1", result(3, 0.66, 0.1)), ("t4", result(1, 0.90, 0.05)),
              ("t2", result(3, 0.85, 1.0)), ("t5", result(1, 0.58, 0.2)), ("t4", result(3, 0.91, 0.05)),
              ("t5", result(3, 0.59, 0.2)), ("t6", result(1, 0.95, 0.01))]
    whole = ParetoASHA(max_t=9, grace_period=1, reduction_factor=3)
    expected = [whole.decide(t, r) for t, r in stream]
    assert STOP in expected and GO in expected
    first = ParetoASHA(max_t=9, grace_period=1, reduction_factor=3)
    got = [first.decide(t, r) for t, r in stream[:5]]
    saved = pickle.loads(pickle.dumps(first.saver.get_state()))
    resumed = ParetoASHA(max_t=9, grace_period=1, reduction_factor=3)  # as Tune builds it again from the Tuner
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
        scheduler = ParetoASHA(max_t=3, grace_period=1, reduction_factor=2)
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
