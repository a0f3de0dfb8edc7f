"""A real small sweep (tiny BERT, 2-worker Ray Train trials, local SQLite MLflow), checked from MLflow alone."""

from __future__ import annotations

import json
import math

from peftsweep.search.tracking.client import PARETO_TAG, PLACE_TAGS, ROLE_TAG, STATUS_TAG, client_for, trial_runs
from tests.tiny import SHARED_EXPERIMENT
from tests.tiny import SWEEP_TRIALS as NUM_SAMPLES

FINAL_METRICS = ["val_accuracy", "test_accuracy", "trainable_params", "trainable_pct", "base_params",
                 "train_seconds", "samples_per_second", "peak_memory_mb"]


def dominated(run, others) -> bool:
    a, c = run.data.metrics["val_accuracy"], run.data.metrics["trainable_pct"]
    return any(o.data.metrics["val_accuracy"] >= a and o.data.metrics["trainable_pct"] <= c
               and (o.data.metrics["val_accuracy"] > a or o.data.metrics["trainable_pct"] < c) for o in others)


def test_mlflow_holds_one_parent_and_one_child_per_trial(finished_sweep):
    client = client_for(finished_sweep.tracking_uri)
    runs = client.search_runs([finished_sweep.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == NUM_SAMPLES == len(runs) - 1
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len({c.data.tags["peftsweep.trial_id"] for c in children}) == NUM_SAMPLES
    for child in children:
        assert child.info.status == "FINISHED"
        assert set(FINAL_METRICS) <= set(child.data.metrics), child.data.metrics.keys()
        method = child.data.params["method"]
        assert "lr" in child.data.params and child.data.tags["peftsweep.method"] == method
        epochs = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in epochs) == [1, 2]  # per-epoch metrics
        assert child.data.metrics["ddp_param_divergence"] == 0.0
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")}
        assert "checkpoint/adapter_model.safetensors" in artifacts and "checkpoint/peftsweep.json" in artifacts
    # the searcher started with each method's defaults, so every method was tried
    assert {c.data.params["method"] for c in children} == {"lora", "ia3", "prompt"}


def test_each_trial_and_the_sweep_record_their_compute(finished_sweep):
    """worker-seconds: the Train job's 2 workers times the trial's wall seconds; the parent run: the sweep's total."""
    client = client_for(finished_sweep.tracking_uri)
    children = [r for r in client.search_runs([finished_sweep.experiment_id], max_results=100)
                if r.data.tags.get(ROLE_TAG) == "trial"]
    for child in children:
        m = child.data.metrics
        assert m["worker_seconds"] == 2 * m["wall_seconds"] > 0 and "gpu_seconds" not in m  # on CPU
        # where it trained, as bench/gpu_sweep.py checks on a GPU (cuda, nccl, bf16)
        assert {k: child.data.tags.get(k) for k in PLACE_TAGS} == {
            "peftsweep.device": "cpu", "peftsweep.dist_backend": "gloo", "peftsweep.autocast": "fp32",
            "peftsweep.strategy": "ddp", "peftsweep.cpu_offload": "no", "peftsweep.trainable_dtype": "fp32",
            "peftsweep.frozen_dtype": "fp32",  # auto on CPU: ddp, and no lean weights
            "peftsweep.trains_in": "ray train job"}  # 2 workers: a Ray Train job (one worker: its trial's process)
    parent = client.get_run(finished_sweep.parent_run_id).data.metrics
    total = sum(c.data.metrics["worker_seconds"] for c in children)
    assert math.isclose(parent["total_worker_seconds"], total) and parent["confirm_worker_seconds"] == 0
    assert math.isclose(finished_sweep.summary.compute["search_worker_seconds"], total)


def test_tagged_front_equals_an_independent_pareto_computation(finished_sweep):
    client = client_for(finished_sweep.tracking_uri)
    children = [r for r in client.search_runs([finished_sweep.experiment_id], max_results=100)
                if r.data.tags.get(ROLE_TAG) == "trial"]
    # the floor (majority class, 0 trainable parameters) dominates every trial that does not beat it
    parent = client.get_run(finished_sweep.parent_run_id).data
    floor = parent.metrics["floor_val_accuracy"]
    assert parent.tags["peftsweep.floor"] == "majority class" and 0 < floor < 1
    expected = {r.info.run_id for r in children
                if not dominated(r, children) and r.data.metrics["val_accuracy"] > floor}
    tagged = {r.info.run_id for r in children if r.data.tags.get(PARETO_TAG) == "true"}
    assert tagged == expected and tagged
    assert all(r.data.tags.get(PARETO_TAG) in ("true", "false") for r in children)
    filtered = client.search_runs([finished_sweep.experiment_id], filter_string=f"tags.`{PARETO_TAG}` = 'true'")
    assert {r.info.run_id for r in filtered} == expected
    assert math.isfinite(finished_sweep.summary.hypervolume) and finished_sweep.summary.hypervolume > 0


def test_summary_files_and_parent_artifacts(finished_sweep):
    import json

    data = json.loads(finished_sweep.summary_json.read_text())
    assert data["counts"]["total"] == NUM_SAMPLES and len(data["front"]) >= 1
    assert finished_sweep.summary_csv.read_text().count("\n") == NUM_SAMPLES + 1
    client = client_for(finished_sweep.tracking_uri)
    names = {a.path for a in client.list_artifacts(finished_sweep.parent_run_id, "summary")}
    assert names == {"summary/summary.json", "summary/trials.csv"}


def test_summary_command_reads_the_front_back_from_mlflow(finished_sweep, capsys):
    from peftsweep.cli import main

    assert main(["summary", "--experiment", SHARED_EXPERIMENT, "--tracking-uri", finished_sweep.tracking_uri]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and f"trials: {NUM_SAMPLES}" in out
    assert main(["summary", "--experiment", "nope", "--tracking-uri", finished_sweep.tracking_uri]) == 2
    # tracking.experiment named the experiment (not the sweep's name, "tiny")
    assert client_for(finished_sweep.tracking_uri).get_experiment(finished_sweep.experiment_id).name == \
        SHARED_EXPERIMENT
    capsys.readouterr()
    assert main(["summary", "--experiment", SHARED_EXPERIMENT, "--tracking-uri", finished_sweep.tracking_uri,
                 "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert len(written["trials"]) == NUM_SAMPLES
    assert {p["run_id"] for p in written["front"]} == {r.run_id for r in finished_sweep.summary.front}


def test_a_sweep_is_summarized_again_on_another_metric(finished_sweep, capsys):
    """Every trial logs val_mcc and val_macro_f1 beside the searched accuracy, the floor is logged in each (majority
    class: MCC 0), and `summary --metric mcc` gives the front over (val MCC, trainable %) computed here from MLflow."""
    from peftsweep.cli import main

    client = client_for(finished_sweep.tracking_uri)
    parent = client.get_run(finished_sweep.parent_run_id).data.metrics
    assert parent["floor_val_mcc"] == 0.0 and 0 < parent["floor_val_macro_f1"] < parent["floor_val_accuracy"]
    runs = trial_runs(client, finished_sweep.experiment_id, finished_sweep.parent_run_id)
    completed = [r for r in runs if r.data.tags[STATUS_TAG] == "completed"]
    assert completed and all({"val_mcc", "val_macro_f1", "test_mcc"} <= set(r.data.metrics) for r in completed)
    points = {r.info.run_id: (r.data.metrics["val_mcc"], r.data.metrics["trainable_pct"]) for r in completed
              if r.data.metrics["val_mcc"] > 0.0}
    expected = {i for i, (q, c) in points.items()
                if not any(q2 >= q and c2 <= c and (q2 > q or c2 < c) for q2, c2 in points.values())}
    assert main(["summary", "--experiment", SHARED_EXPERIMENT, "--tracking-uri", finished_sweep.tracking_uri,
                 "--metric", "mcc", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert {p["run_id"] for p in written["front"]} == expected
    assert written["floor"]["val_mcc"] == 0.0
    assert main(["summary", "--experiment", SHARED_EXPERIMENT, "--tracking-uri", finished_sweep.tracking_uri,
                 "--metric", "mcc"]) == 0
    assert "Pareto front (val MCC (max), trainable % (min))" in capsys.readouterr().out


def test_dashboard_command_writes_the_report(finished_sweep, tmp_path, capsys):
    from peftsweep.cli import main

    assert main(["dashboard", "--experiment", SHARED_EXPERIMENT, "--tracking-uri", finished_sweep.tracking_uri,
                 "--out", str(tmp_path), "--no-log"]) == 0
    html = (tmp_path / "dashboard.html").read_text()
    assert all(r.run_id[:8] in html for r in finished_sweep.summary.front) and list(tmp_path.glob("*.png"))
