"""The dashboard of a real small sweep, rendered in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from peftsweep.dashboards.report import FRONT_FILTER, build_dashboard
from peftsweep.search.tracking import client_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def board(finished_sweep, tmp_path_factory):
    return build_dashboard(finished_sweep.tracking_uri, "tiny", tmp_path_factory.mktemp("dashboard"))


def test_pngs_and_html_are_parent_run_artifacts(board, finished_sweep):
    for png in board.pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    html = board.html.read_text()
    assert "<script src=" not in html and "Plotly.newPlot" in html  # plotly.js is inlined: no network needed
    client = client_for(finished_sweep.tracking_uri)
    names = {a.path for a in client.list_artifacts(finished_sweep.parent_run_id, "dashboard")}
    assert names == {"dashboard/dashboard.html", "dashboard/pareto.png", "dashboard/per_method.png",
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
    assert rendered == 6
    assert errors == []
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000


def test_ui_serves_the_store_on_loopback(finished_sweep):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "peftsweep.cli", "ui", "--tracking-uri", finished_sweep.tracking_uri,
                             "--experiment", "tiny", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # the link it prints opens the sweep's training runs, filtered to the front
        first = next(line for line in proc.stdout if "MLflow UI for" in line)
        assert (f"http://127.0.0.1:{port}/#/experiments/{finished_sweep.experiment_id}/runs?searchFilter="
                f"tags.%60peftsweep.pareto%60+%3D+%27true%27") in first, first
        kind = client_for(finished_sweep.tracking_uri).get_experiment(finished_sweep.experiment_id).tags
        assert kind["mlflow.experimentKind"] == "finetuning"  # MLflow's UI opens training runs, not GenAI traces
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and status is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
            except OSError:
                time.sleep(1)
        assert status == 200
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        local_addresses = {line.split()[3] for line in listening.splitlines()}
        assert local_addresses == {f"127.0.0.1:{port}"}  # loopback only, not 0.0.0.0 or [::]
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
