"""The saved view of the front that `run` and `ui` link to (opened in a browser by tests/dashboards)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from peftsweep.search.tracking.front_view import (FRONT_FILTER, TRIALS_FILTER, VIEW_ID, VIEW_NAME, VIEW_TAG_PREFIX, VIEWS,
                                         front_view_url, has_front_view, save_front_view, saved_filter)
from peftsweep.search.tracking.client import client_for


def test_saved_view_is_an_experiment_tag_in_mlflows_envelope(tmp_path):
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    assert not has_front_view(client, experiment_id)
    save_front_view(client, experiment_id, "parent1")
    save_front_view(client, experiment_id, "parent2")  # a newer sweep takes the views over, never adds more
    views = {k: v for k, v in client.get_experiment(experiment_id).tags.items() if k.startswith(VIEW_TAG_PREFIX)}
    assert sorted(views) == sorted(VIEW_TAG_PREFIX + v for v in VIEWS) and has_front_view(client, experiment_id)
    trials = json.loads(json.loads(views[VIEW_TAG_PREFIX + "peftsweeptrials"])["state"])
    assert trials["searchFilter"] == f"{TRIALS_FILTER} and tags.mlflow.parentRunId = 'parent2'"
    assert saved_filter(client, experiment_id) == f"{FRONT_FILTER} and tags.mlflow.parentRunId = 'parent2'"
    envelope = json.loads(views[VIEW_TAG_PREFIX + VIEW_ID])
    assert envelope["name"] == VIEW_NAME and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])  # MLflow's UI parses the state string as JSON when it is not compressed
    assert state["orderByKey"] == "metrics.`val_accuracy`"
    scatter = next(c for c in state["compareRunCharts"] if c["type"] == "SCATTER")
    assert (scatter["xaxis"]["key"], scatter["yaxis"]["key"]) == ("log10_trainable_pct", "val_accuracy")
    assert scatter["metricSectionId"] in {s["uuid"] for s in state["compareRunSections"]}
    assert len(views[VIEW_TAG_PREFIX + VIEW_ID]) < 20_000  # MLflow refuses to save larger views


def test_links_to_the_view_or_to_the_filter():
    saved = urlsplit(front_view_url("http://127.0.0.1:5000/", "7"))
    assert saved.fragment.startswith("/experiments/7/runs?")
    assert parse_qs(saved.fragment.split("?", 1)[1]) == {"viewStateShareKey": [VIEW_ID], "compareRunsMode": ["CHART"]}
    plain = urlsplit(front_view_url("http://127.0.0.1:5000", "7", saved_view=False))
    query = parse_qs(plain.fragment.split("?", 1)[1])
    assert query["searchFilter"] == [FRONT_FILTER] and query["orderByAsc"] == ["false"]


def test_the_views_show_the_sweeps_objectives_as_columns_and_charts(tmp_path):
    from peftsweep.search.results.objectives import Objectives

    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    objectives = Objectives(costs=("peak_memory_mb", "train_seconds"), budgets=(("checkpoint_mb", 1.0),))
    save_front_view(client, experiment_id, "parent1", objectives)
    envelope = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + VIEW_ID])
    state = json.loads(envelope["state"])
    scatters = [c for c in state["compareRunCharts"] if c["type"] == "SCATTER"]
    assert [c["xaxis"]["key"] for c in scatters] == ["log10_trainable_pct", "peak_memory_mb", "train_seconds"]
    assert len({c["uuid"] for c in state["compareRunCharts"]}) == len(state["compareRunCharts"])
    assert {"metrics.`peak_memory_mb`", "metrics.`train_seconds`", "tags.`peftsweep.over_budget`"} <= set(
        state["selectedColumns"])
