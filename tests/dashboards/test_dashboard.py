"""The dashboard of a real small sweep, rendered in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peftsweep.dashboards.report import build_dashboard
from peftsweep.search.tracking.front_view import FRONT_FILTER
from peftsweep.search.tracking.client import client_for
from tests.dashboards.mlflow_page import CHROMIUM, CHROMIUM_ARGS, expected_points, open_view, other_view, serve_ui
from tests.tiny import SHARED_EXPERIMENT



@pytest.fixture(scope="module")
def board(finished_sweep, tmp_path_factory):
    return build_dashboard(finished_sweep.tracking_uri, SHARED_EXPERIMENT, tmp_path_factory.mktemp("dashboard"))


def test_pngs_and_html_are_parent_run_artifacts(board, finished_sweep):
    for png in board.pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    html = board.html.read_text()
    assert "<script src=" not in html and "Plotly.newPlot" in html  # plotly.js is inlined: no network needed
    client = client_for(finished_sweep.tracking_uri)
    names = {a.path for a in client.list_artifacts(finished_sweep.parent_run_id, "dashboard")}
    assert names == {"dashboard/dashboard.html", "dashboard/pareto.png", "dashboard/pareto_peak_memory_mb.png",
                     "dashboard/pareto_train_seconds.png", "dashboard/per_method.png",
                     "dashboard/learning_curves.png", "dashboard/hypervolume.png"}


def test_documented_filter_returns_exactly_the_front(board, finished_sweep):
    client = client_for(finished_sweep.tracking_uri)
    runs = client.search_runs([finished_sweep.experiment_id], filter_string=FRONT_FILTER)
    assert {r.info.run_id for r in runs} == {r.run_id for r in board.data.summary.front}


def test_page_renders_in_headless_chromium(board, tmp_path: Path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.goto(board.html.as_uri())
        page.wait_for_function("document.querySelector('#pareto .main-svg') !== null", timeout=30_000)
        method_traces = page.evaluate(
            "document.getElementById('pareto').data.filter(t => t.meta === 'method').map(t => t.name)")
        rows = page.eval_on_selector_all("#comparison tbody tr", "rows => rows.length")
        rendered = page.eval_on_selector_all(".js-plotly-plot", "plots => plots.length")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        browser.close()
    methods = sorted({r.method for r in board.data.trials})
    assert sorted(method_traces) == methods
    assert rows == len(methods)
    assert rendered == 8  # accuracy against trainable %, peak memory and training time; then the other five
    assert errors == []
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000


@pytest.fixture(scope="module")
def mlflow_ui(finished_sweep):
    with serve_ui(finished_sweep.tracking_uri, SHARED_EXPERIMENT) as served:
        yield served


def test_ui_serves_the_store_on_loopback(finished_sweep, mlflow_ui):
    import subprocess

    link, port = mlflow_ui
    # the link it prints opens the sweep's saved view of the front, in chart mode
    assert link == (f"http://127.0.0.1:{port}/#/experiments/{finished_sweep.experiment_id}/runs?"
                    f"viewStateShareKey=peftsweepfront&compareRunsMode=CHART"), link
    tags = client_for(finished_sweep.tracking_uri).get_experiment(finished_sweep.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "finetuning"  # MLflow's UI opens training runs, not GenAI traces
    assert "mlflow.sharedViewState.peftsweepfront" in tags
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    local_addresses = {line.split()[3] for line in listening.splitlines()}
    assert local_addresses == {f"127.0.0.1:{port}"}  # loopback only, not 0.0.0.0 or [::]


def test_printed_link_opens_the_front_in_mlflow(finished_sweep, mlflow_ui, tmp_path: Path):
    """The one click from "the sweep finished" to MLflow's own chart of validation accuracy against trainable %:
    the runs page lists the front alone and charts exactly its points."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    expected = expected_points(finished_sweep.tracking_uri, SHARED_EXPERIMENT)
    assert {name.rsplit("-", 1)[1] for name, _, _ in expected} == {r.trial_id for r in finished_sweep.summary.front}
    page = open_view(mlflow_ui[0], tmp_path / "mlflow-front.png")
    assert page.matching == len(expected)
    assert {name for name, _, _ in expected} <= set(page.listed)
    assert page.scatter_y == ["val_accuracy"]
    assert page.points == expected
    assert (tmp_path / "mlflow-front.png").stat().st_size > 20_000
    # the second saved view charts every trial (the front among them)
    every = expected_points(finished_sweep.tracking_uri, SHARED_EXPERIMENT, "peftsweeptrials")
    assert len(every) == len(finished_sweep.summary.trials) and expected <= every
    page = open_view(other_view(mlflow_ui[0], "peftsweeptrials"), tmp_path / "mlflow-trials.png")
    assert page.matching == len(every) and page.points == every
