"""Objectives and budgets: the config keys, the values read from results and records, and what the searcher tells
Optuna (its constraints, so that the sampler learns which trials broke a budget)."""

from __future__ import annotations

import math
from functools import partial

import pytest

from pydantic import ValidationError

from peftsweep.errors import UserError
from peftsweep.search.config import SearchSettings, load_sweep_config
from peftsweep.search.orchestration.searcher import BudgetedOptunaSearch, make_sampler
from peftsweep.search.orchestration.space import define_space
from peftsweep.search.results.objectives import NOT_RUN, Objectives, worker_seconds
from peftsweep.spaces import REGISTRY

BASE = {"name": "x", "model": "m", "data": {"preset": "trec6"}}


def test_the_default_objectives_are_accuracy_and_trainable_pct():
    objectives = load_sweep_config(None, default=BASE).objective_set
    assert objectives == Objectives() and objectives.names == ("val_accuracy", "trainable_pct")
    assert objectives.modes == ("max", "min") and objectives.budgets == ()


def test_every_problem_with_objectives_and_budgets_is_reported_at_once_under_its_key():
    bad = BASE | {"objectives": ["loss", "memory", "memory", "train_seconds", "checkpoint_mb"],
                  "constraints": {"gpu_hours": 1, "train_seconds": 0}}
    with pytest.raises(UserError) as refused:
        load_sweep_config(None, default=bad)
    text = refused.value.render()
    assert "objectives: the first is the quality: accuracy" in text
    assert "then 1 to 3 costs" in text and "unknown cost memory: choose from trainable_pct" in text
    assert "a cost named twice" in text
    assert "constraints: gpu_hours: not a cost" in text and "train_seconds: a budget above 0" in text
    with pytest.raises(UserError, match="objectives: then 1 to 3 costs"):
        load_sweep_config(None, default=BASE | {"objectives": ["accuracy"]})


def test_budgets_project_time_of_a_stopped_trial_and_read_the_plan_for_a_trial_not_run():
    objectives = Objectives(costs=("peak_memory_mb",), budgets=(("train_seconds", 60.0), ("peak_memory_mb", 100.0)))
    stopped = {"epoch": 1, "train_seconds": 25.0, "peak_memory_mb": 90.0}
    assert objectives.over_budget(stopped) == []  # 25 s measured
    assert objectives.over_budget(stopped, planned_epochs=3) == ["train_seconds 75 > 60"]  # 3 epochs: about 75 s
    assert objectives.violations(stopped, planned_epochs=3) == {"train_seconds": 15.0, "peak_memory_mb": -10.0}
    not_run = {"epoch": 0, "peak_memory_mb": math.nan, "planned_min_memory_mb": 250.0}
    assert objectives.over_budget(not_run) == ["peak_memory_mb 250 > 100"]
    assert objectives.violations({}) == {"train_seconds": 0.0, "peak_memory_mb": 0.0}  # unmeasured: 0, Optuna refuses NaN


def test_worker_seconds_of_a_result_are_tunes_time_times_the_workers():
    assert worker_seconds({"time_total_s": 12.0, "num_workers": 2}) == 24.0
    assert math.isnan(worker_seconds({"time_total_s": 12.0}))


def test_hypervolume_references_fix_trainable_pct_and_follow_the_sweep_for_other_costs():
    objectives = Objectives(costs=("trainable_pct", "peak_memory_mb"))
    records = [{"trainable_pct": 0.5, "peak_memory_mb": 300.0}, {"trainable_pct": 100.0, "peak_memory_mb": 900.0}]
    assert objectives.hv_references(records) == (1000.0, 9000.0)


def searcher_for(objectives: Objectives) -> BudgetedOptunaSearch:
    searcher = BudgetedOptunaSearch(space=partial(define_space, methods={"ia3": REGISTRY["ia3"]}),
                                    metric=list(objectives.names), mode=list(objectives.modes),
                                    sampler=make_sampler(SearchSettings(algorithm="tpe"), 0))
    searcher.objectives, searcher.planned_epochs = objectives, 3
    return searcher


def test_the_searcher_tells_optuna_each_trials_budget_violations():
    objectives = Objectives(costs=("peak_memory_mb",), budgets=(("peak_memory_mb", 100.0),))
    searcher = searcher_for(objectives)
    for trial_id, memory in (("over", 150.0), ("kept", 50.0)):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, {"epoch": 3, "val_accuracy": 0.9, "peak_memory_mb": memory})
    searcher.suggest("not-run")
    searcher.on_trial_complete("not-run", {"epoch": 0, "val_accuracy": math.nan, "peak_memory_mb": math.nan,
                                           "planned_min_memory_mb": 300.0, NOT_RUN: "the memory plan ..."})
    over, kept, not_run = searcher._ot_study.trials
    assert over.constraints == {"peak_memory_mb": 50.0} and over.values == [0.9, 150.0]
    assert kept.constraints == {"peak_memory_mb": -50.0}
    assert not_run.state.name == "PRUNED" and not_run.constraints == {"peak_memory_mb": 200.0}
    from optuna.study._constrained_optimization import _get_feasible_trials

    assert [t.number for t in _get_feasible_trials(searcher._ot_study.trials)] == [kept.number]


def test_the_searcher_computes_worker_seconds_when_they_are_an_objective():
    searcher = searcher_for(Objectives(costs=("worker_seconds",)))
    searcher.suggest("t")
    searcher.on_trial_complete("t", {"epoch": 3, "val_accuracy": 0.8, "time_total_s": 30.0, "num_workers": 2})
    assert searcher._ot_study.trials[0].values == [0.8, 60.0]


def test_metric_names_the_quality_and_the_first_objective(tmp_path):
    from peftsweep.search.config import SweepConfig

    base = {"name": "m", "model": "all-MiniLM-L6-v2", "data": {"preset": "trec6"}}
    config = SweepConfig(**base, metric="mcc")
    assert config.objectives == ["mcc", "trainable_pct"]
    assert config.objective_set.quality == "val_mcc" and config.objective_set.test_quality == "test_mcc"
    assert SweepConfig(**base, metric="macro_f1", objectives=["macro_f1", "peak_memory_mb"]).objective_set.costs == (
        "peak_memory_mb",)
    assert SweepConfig(**base).objective_set.quality == "val_accuracy"  # no metric: accuracy, as before
    with pytest.raises(ValidationError, match="metric"):
        SweepConfig(**base, metric="f1")


def test_a_signed_cost_has_a_linear_reference_beyond_the_worst():
    objectives = Objectives(costs=("trainable_pct", "forgetting"))
    assert objectives.log_axes == (True, False)
    records = [{"trainable_pct": 0.5, "forgetting": -0.1}, {"trainable_pct": 100.0, "forgetting": 0.3}]
    assert objectives.hv_references(records) == pytest.approx((1000.0, 0.3 + 0.4))  # the worst plus the span
    assert objectives.hv_references(records[:1]) == pytest.approx((1000.0, 0.9))  # one value: plus 1
