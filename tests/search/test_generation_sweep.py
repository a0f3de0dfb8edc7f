"""A real small sweep in generation mode (tiny random Llama causal LM, 1-worker Ray Train trials; two processes' exact
generation counts: tests/trainers/test_generation.py), checked from MLflow."""

from __future__ import annotations

import json
import math
import random

import pytest

from peftsweep.search.tracking.client import PARETO_TAG, ROLE_TAG, client_for
from tests.conftest import sweep_on_local_ray
from peftsweep.trainers.benchmarks import installed
from tests.tiny import ANSWER_TEMPLATE, FILLER, LM_EVAL_TASK, write_lm_eval_task

# full fine-tuning at a rate that learns the toy task in 2 epochs (tests/trainers/test_generation.py): the front
# must hold a trial that beats the zero-shot floor
METHODS = {"lora": {"targets": "all_linear"}, "prompt": {"num_virtual_tokens": 2}, "full": {"lr": 1e-2}}


TRIALS = len(METHODS)


@pytest.fixture(scope="module")
def generation_sweep(tmp_path_factory, tiny_causal, tiny_csv):
    out = tmp_path_factory.mktemp("gen-sweep")
    rng = random.Random(7)
    general = out / "general.txt"
    general.write_text(" ".join(" ".join(rng.choices(FILLER, k=12)) + " ." for _ in range(40)))
    config = {
        "name": "gen", "model": tiny_causal, "output_dir": str(out), "task": "generation",
        "data": {"train_file": tiny_csv, "template": ANSWER_TEMPLATE},
        "methods": METHODS,
        "train": {"epochs": 2, "batch_size": 16},
        # NSGA-II's sampler in a real sweep (its first trials are the start points it is given)
        "search": {"algorithm": "nsga2", "num_samples": TRIALS, "seed": 1, "start_points": "defaults"},
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        # forgetting measured on text of the filler words alone (none of the task's), and searched as a third objective
        "forgetting": {"text_file": str(general), "max_tokens": 240, "chunk_tokens": 24},
        "objectives": ["accuracy", "trainable_pct", "forgetting"],
    }
    if installed():  # lm-eval on a local task (tests/trainers/test_benchmarks.py checks its numbers)
        write_lm_eval_task(out / "lm-eval-tasks")
        config["evaluate"] = {"lm_eval": {"tasks": [LM_EVAL_TASK], "include_path": str(out / "lm-eval-tasks"),
                                          "limit": 20, "add_bos_token": False}}
    return sweep_on_local_ray(config, out)


def test_every_trial_is_a_generation_run_in_mlflow(generation_sweep):
    client = client_for(generation_sweep.tracking_uri)
    runs = client.search_runs([generation_sweep.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"]
    assert len(children) == TRIALS == len(runs) - 1
    assert {c.data.params["method"] for c in children} == set(METHODS)
    parent = next(r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep")
    assert parent.data.params["algorithm"] == "nsga2"
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["peftsweep.status"] == "completed"
        metrics = child.data.metrics
        assert 0 <= metrics["val_accuracy"] <= 1 and 0 <= metrics["test_accuracy"] <= 1
        assert metrics["val_loss"] > 0 and metrics["test_loss"] > 0 and "val_macro_f1" not in metrics
        assert metrics["eval_samples_per_second"] > 0 and metrics["generation_samples_per_second"] > 0
        assert metrics["ddp_param_divergence"] == 0.0
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_loss")) == [1, 2]
        # forgetting: every epoch, against the base measured before the first step
        assert metrics["base_general_loss"] > 0
        assert metrics["forgetting"] == pytest.approx(metrics["general_loss"] - metrics["base_general_loss"])
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "forgetting")) == [1, 2]
        manifest = client.download_artifacts(child.info.run_id, "checkpoint/peftsweep.json")
        assert json.loads(open(manifest).read())["task"] == "generation"


def test_zero_shot_floor_is_on_the_parent_and_the_front_beats_it(generation_sweep):
    client = client_for(generation_sweep.tracking_uri)
    parent = client.get_run(generation_sweep.parent_run_id).data
    assert parent.tags["peftsweep.floor"] == "zero-shot"
    floor = parent.metrics["floor_val_accuracy"]
    assert 0 <= floor <= 1 and 0 <= parent.metrics["floor_test_accuracy"] <= 1
    summary = generation_sweep.summary
    assert summary.floor is not None and summary.floor.val_accuracy == floor
    children = [r for r in client.search_runs([generation_sweep.experiment_id], max_results=100)
                if r.data.tags.get(ROLE_TAG) == "trial"]
    tagged = {r.info.run_id for r in children if r.data.tags.get(PARETO_TAG) == "true"}
    assert tagged == {r.run_id for r in summary.front}
    assert summary.front, "no trial beat the zero-shot floor: nothing learned"
    assert all(r.val_accuracy > floor for r in summary.front)
    assert summary.below_floor == sum(r.data.metrics["val_accuracy"] <= floor for r in children)
    written = json.loads(generation_sweep.summary_json.read_text())
    assert written["floor"] == {"kind": "zero-shot", "val_accuracy": floor,
                                "test_accuracy": parent.metrics["floor_test_accuracy"]}


def test_dashboard_draws_the_floor(generation_sweep, tmp_path):
    from peftsweep.dashboards.figure_data import compute
    from peftsweep.dashboards.report import build_dashboard

    board = build_dashboard(generation_sweep.tracking_uri, "gen", tmp_path, log_to_mlflow=False)
    floor = compute(board.data).planes[0].floor  # read back from the parent run, not handed over
    assert floor is not None and floor.y == generation_sweep.summary.floor.val_accuracy
    assert "floor (zero-shot)" in floor.label and "floor (zero-shot)" in board.html.read_text()


def test_forgetting_is_an_objective_and_a_column_against_full(generation_sweep, tmp_path):
    from peftsweep.dashboards.figure_data import compute
    from peftsweep.dashboards.report import build_dashboard
    from peftsweep.search.results.summary import format_table

    summary = generation_sweep.summary
    full = next(m for m in summary.by_method if m.method == "full")
    assert full.forgetting > 0  # trained at a high rate on the task's words: worse at the filler text
    for m in summary.by_method:
        assert m.forgetting_vs_full == pytest.approx(m.forgetting - full.forgetting)
    assert summary.objectives.costs == ("trainable_pct", "forgetting") and summary.objectives.log_axes == (True, False)
    assert math.isfinite(summary.hypervolume) and summary.hypervolume > 0
    table = format_table(summary)
    assert "forgetting" in table and "vs full" in table
    planes = compute(build_dashboard(generation_sweep.tracking_uri, "gen", tmp_path, log_to_mlflow=False).data).planes
    plane = next(p for p in planes if p.cost == "forgetting")
    assert not plane.log_x and plane.x_range[0] < min(m.x for s in plane.series for m in s.markers)
    assert (tmp_path / "pareto_forgetting.png").is_file()


@pytest.mark.skipif(not installed(), reason="lm-eval is not installed: pip install 'peftsweep[eval]' (.ci/run "
                                            "installs it)")
def test_lm_eval_scores_the_front_and_the_base_into_mlflow(generation_sweep):
    from peftsweep.search.results.summary import format_table

    client = client_for(generation_sweep.tracking_uri)
    summary = generation_sweep.summary
    acc = f"lm_eval/{LM_EVAL_TASK}/acc"
    parent = client.get_run(generation_sweep.parent_run_id).data.metrics
    assert 0 <= parent[acc] <= 1 and summary.base_benchmarks[acc] == parent[acc]  # the base model's
    front = {r.run_id for r in summary.front}
    for child in client.search_runs([generation_sweep.experiment_id], max_results=100):
        if child.data.tags.get(ROLE_TAG) != "trial":
            continue
        scored = acc in child.data.metrics
        assert scored == (child.info.run_id in front), child.data.params["method"]  # the front's runs alone
        if scored:
            assert 0 <= child.data.metrics[acc] <= 1 and f"lm_eval/{LM_EVAL_TASK}/acc_norm" in child.data.metrics
    assert "Standard benchmarks (lm-eval" in format_table(summary) and f"{LM_EVAL_TASK}/acc " in format_table(summary)
    written = json.loads(generation_sweep.summary_json.read_text())
    assert written["base_benchmarks"][acc] == parent[acc]
