"""Warm start from the shared small sweep (tests/conftest.py): its completed trials seed a new sweep's searcher."""

from __future__ import annotations

import pytest

from peftsweep.errors import UserError
from peftsweep.search.config import SweepConfig
from peftsweep.search.plan import build_plan
from peftsweep.search.orchestration.searcher import searcher_and_space
from peftsweep.search.tracking.client import client_for, logged_config
from peftsweep.search.orchestration.warm_start import gather
from tests.tiny import SHARED_EXPERIMENT


def config_like(finished_sweep, tmp_path, **changes) -> SweepConfig:
    """The shared sweep's own config (as logged: its model and data paths), renamed, warm-started from it."""
    source = {"experiment": SHARED_EXPERIMENT, "tracking_uri": finished_sweep.tracking_uri} | changes.pop("source", {})
    raw = logged_config(client_for(finished_sweep.tracking_uri), finished_sweep.parent_run_id)
    raw = raw | {"name": "again", "output_dir": str(tmp_path / "again")} | changes
    raw["search"] = raw["search"] | {"warm_start": [source]}
    return SweepConfig.model_validate(raw)


def warm_for(config: SweepConfig):
    plan = build_plan(config)
    return plan, gather(config.search.warm_start, config.model_dump(mode="json"), plan.methods, config.tracking_uri)


def test_completed_trials_become_completed_optuna_trials_with_both_objectives(finished_sweep, tmp_path):
    plan, warm = warm_for(config_like(finished_sweep, tmp_path))
    completed = [r for r in finished_sweep.summary.trials if r.status == "completed"]
    assert len(warm.trials) == len(completed) >= 3
    assert f"warm start: {len(completed)} completed trials of sweep '{SHARED_EXPERIMENT}'" in warm.lines[0]
    searcher, _, _ = searcher_and_space(plan, warm)
    study = searcher._ot_study
    assert sorted(tuple(t.values) for t in study.trials) == sorted((r.val_accuracy, r.trainable_pct) for r in completed)
    assert all(t.params["method"] in ("lora", "ia3", "prompt") for t in study.trials)
    assert searcher._points_to_evaluate in (None, [])  # every method was tried before: no start point again
    lora = next(t for t in study.trials if t.params["method"] == "lora")
    assert set(lora.params) >= {"lora.r", "lora.lr"} and isinstance(lora.params["lora.r"], int)


def test_a_mismatched_sweep_is_refused_unless_allowed(finished_sweep, tmp_path):
    train = {"epochs": 3, "batch_size": 16}
    with pytest.raises(UserError) as refused:
        warm_for(config_like(finished_sweep, tmp_path, train=train))
    text = refused.value.render()
    assert "search.warm_start[0]: train.epochs: that sweep had 2, the config now says 3" in text
    assert "allow_mismatch: true" in text
    _, warm = warm_for(config_like(finished_sweep, tmp_path, train=train, source={"allow_mismatch": True}))
    assert warm.trials and "differs in train.epochs" in warm.lines[0]


def test_trials_outside_todays_ranges_are_left_out(finished_sweep, tmp_path):
    methods = {"lora": {"r": [2, 8]}, "ia3": {}}  # prompt is no longer searched: its trials do not fit
    _, warm = warm_for(config_like(finished_sweep, tmp_path, methods=methods, source={"allow_mismatch": True}))
    prompt = sum(1 for r in finished_sweep.summary.trials if r.method == "prompt" and r.status == "completed")
    assert prompt >= 1  # every method had its start point
    assert warm.methods <= {"lora", "ia3"} and len(warm.trials) == len(
        [r for r in finished_sweep.summary.trials if r.status == "completed"]) - prompt
    assert f"; {prompt} outside this sweep's space (methods, ranges) left out" in warm.lines[0]
    with pytest.raises(UserError, match=r"search.warm_start\[0\]: no experiment 'nope'"):
        warm_for(config_like(finished_sweep, tmp_path, source={"experiment": "nope"}))


def test_warm_start_needs_a_learning_searcher():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs a searcher that learns"):
        SweepConfig.model_validate({"name": "x", "model": "m", "data": {"preset": "trec6"},
                                    "search": {"algorithm": "grid", "warm_start": [{"experiment": "a"}]}})


def test_a_warm_started_sweep_runs_without_start_points(finished_sweep, tmp_path, capfd):
    """The whole path: read before Ray starts, said on the console, the searcher seeded, no method's start point run
    again (every method was tried by the source)."""
    from tests.conftest import sweep_on_local_ray

    raw = config_like(finished_sweep, tmp_path).model_dump(mode="json", exclude_unset=True)
    raw["search"] |= {"num_samples": 1}
    outcome = sweep_on_local_ray(raw, tmp_path)
    out = capfd.readouterr().out
    completed = sum(1 for r in finished_sweep.summary.trials if r.status == "completed")
    assert f"warm start: {completed} completed trials of sweep '{SHARED_EXPERIMENT}'" in out
    assert outcome.summary.counts["total"] == 1 and outcome.status == "finished"
    # a start point trains its method at the default learning rate; the searcher samples one
    from peftsweep.spaces import REGISTRY

    for r in outcome.summary.trials:
        assert float(r.params["lr"]) != REGISTRY[r.method].params["lr"].default, r.params


def test_trials_come_in_this_sweeps_objectives_with_their_budgets(finished_sweep, tmp_path):
    completed = [r for r in finished_sweep.summary.trials if r.status == "completed"]
    budget = sorted(r.peak_memory_mb for r in completed)[len(completed) // 2]
    config = config_like(finished_sweep, tmp_path, objectives=["accuracy", "peak_memory_mb"],
                         constraints={"peak_memory_mb": budget})
    plan, warm = warm_for(config)
    searcher, _, _ = searcher_and_space(plan, warm)
    told = sorted((tuple(t.values), t.constraints["peak_memory_mb"]) for t in searcher._ot_study.trials)
    assert told == sorted(((r.val_accuracy, r.peak_memory_mb), r.peak_memory_mb - budget) for r in completed)
    assert any(v > 0 for _, v in told) and any(v <= 0 for _, v in told)  # both sides of the budget
