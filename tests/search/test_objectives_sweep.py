"""A real sweep over three objectives (accuracy, peak memory, training time) with budgets, checked from MLflow alone:
its front against the definition computed here, the trials over the checkpoint budget tagged and kept off the front,
full fine-tuning not run because the memory plan shows it over the memory budget."""

from __future__ import annotations

import math

import pytest

from peftsweep.search.tracking.client import OVER_BUDGET_TAG, PARETO_TAG, STATUS_TAG, client_for, trial_runs
from tests.conftest import sweep_on_local_ray
from tests.tiny import make_csv, make_model_dir

# A BERT of 12.6 M parameters (hidden 512, 6 layers): full fine-tuning needs at least 197 MiB for its weights,
# gradients and AdamW state; PEFT trials measured 119-143 MiB at their peak on CPU
# (the budget leaves room for a busier machine). A LoRA checkpoint grows about
# 0.047 MiB per unit of r (0.11 MiB at r = 2, 3.0 MiB at r = 64).
MEMORY_BUDGET_MB, CHECKPOINT_BUDGET_MB = 180, 0.6


@pytest.fixture(scope="module")
def objectives_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("objectives")
    model = str(make_model_dir(out / "bert-512", hidden=512, layers=6))
    config = {
        "name": "three-objectives", "model": model, "output_dir": str(out),
        "data": {"train_file": str(make_csv(out / "toy.csv", n=240)), "max_length": 16},
        # a grid: LoRA at r = 2, 11, 64 (checkpoints 0.11, 0.53, 3.0 MiB), IA3 at three learning rates, full once
        "methods": {"lora": {"r": [2, 64], "alpha_multiple": 2, "dropout": 0.0, "targets": "attention", "lr": 0.01},
                    "ia3": {"lr": [0.005, 0.05]}, "full": {"lr": 0.0002}},
        "objectives": ["accuracy", "peak_memory_mb", "train_seconds"],
        "constraints": {"peak_memory_mb": MEMORY_BUDGET_MB, "checkpoint_mb": CHECKPOINT_BUDGET_MB},
        "train": {"epochs": 3, "batch_size": 16},
        "search": {"algorithm": "grid", "grid_points": 3, "max_concurrent_trials": 2},
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
    }
    outcome = sweep_on_local_ray(config, out)
    client = client_for(outcome.tracking_uri)
    runs = trial_runs(client, outcome.experiment_id, outcome.parent_run_id)
    return outcome, client, runs


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """(accuracy, memory, time): a is at least as good everywhere and better somewhere."""
    at_least = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
    return at_least and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])


def test_the_front_is_the_three_objective_front_of_the_feasible_trials(objectives_sweep):
    outcome, client, runs = objectives_sweep
    floor = client.get_run(outcome.parent_run_id).data.metrics["floor_val_accuracy"]
    candidates = {}
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        if tags[STATUS_TAG] == "completed" and tags.get(OVER_BUDGET_TAG) == "" and m["val_accuracy"] > floor:
            candidates[run.info.run_id] = (m["val_accuracy"], m["peak_memory_mb"], m["train_seconds"])
    expected = {i for i, v in candidates.items() if not any(dominates(w, v) for w in candidates.values())}
    tagged = {r.info.run_id for r in runs if r.data.tags.get(PARETO_TAG) == "true"}
    assert expected and tagged == expected
    assert {r.run_id for r in outcome.summary.front} == expected
    assert outcome.summary.objectives.names == ("val_accuracy", "peak_memory_mb", "train_seconds")
    assert math.isfinite(outcome.summary.hypervolume) and outcome.summary.hypervolume > 0
    parent = client.get_run(outcome.parent_run_id).data
    assert parent.params["objectives"] == "accuracy,peak_memory_mb,train_seconds"
    assert parent.tags["peftsweep.objectives"] == ("val acc (max), peak MiB (min), train s (min); budgets peak MiB "
                                                   "<= 180, ckpt MiB <= 0.6")


def test_trials_over_a_budget_are_tagged_and_never_on_the_front(objectives_sweep):
    outcome, client, runs = objectives_sweep
    by_status: dict[str, list] = {}
    for run in runs:
        by_status.setdefault(run.data.tags[STATUS_TAG], []).append(run)
    completed = by_status["completed"]
    over = [r for r in completed if r.data.tags[OVER_BUDGET_TAG]]
    kept = [r for r in completed if not r.data.tags[OVER_BUDGET_TAG]]
    # over budget exactly when a logged cost is over its budget (checked here from the metrics alone)
    for run in completed:
        m = run.data.metrics
        assert (run in over) == (m["checkpoint_mb"] > CHECKPOINT_BUDGET_MB or m["peak_memory_mb"] > MEMORY_BUDGET_MB)
    # the constraint excludes LoRA's larger configurations by their checkpoints; the smallest stays
    lora_r = {int(r.data.params["r"]): r for r in completed if r.data.tags["peftsweep.method"] == "lora"}
    assert sorted(lora_r) == [2, 11, 64]
    assert lora_r[64] in over and "checkpoint_mb " in lora_r[64].data.tags[OVER_BUDGET_TAG]
    assert lora_r[2].data.metrics["checkpoint_mb"] <= CHECKPOINT_BUDGET_MB
    for run in over:
        assert run.data.tags[PARETO_TAG] == "false"
        assert run.data.tags[OVER_BUDGET_TAG].split()[0] in ("checkpoint_mb", "peak_memory_mb")
    for run in kept:
        assert run.data.metrics["checkpoint_mb"] <= CHECKPOINT_BUDGET_MB
        assert run.data.metrics["peak_memory_mb"] <= MEMORY_BUDGET_MB
        assert run.data.metrics["tokens_per_second"] > 0
    # full fine-tuning: the plan's least memory is over the memory budget, so it never ran
    full = [r for r in runs if r.data.tags["peftsweep.method"] == "full"]
    assert full and all(r.data.tags[STATUS_TAG] == "not_run" for r in full)
    for run in full:
        assert run.data.metrics["planned_min_memory_mb"] > MEMORY_BUDGET_MB
        assert "memory plan" in run.data.tags[OVER_BUDGET_TAG] and run.data.tags[PARETO_TAG] == "false"
        assert "val_accuracy" not in run.data.metrics
    assert outcome.summary.counts["not_run"] == len(full)
    assert outcome.summary.over_budget == len(over)
