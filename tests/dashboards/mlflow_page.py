"""Open the front's link that `peftsweep ui` prints in headless Chromium and read what MLflow's runs page shows.

Used by the browser test on the test sweep, and by `make docs-img` on the demo's store for the pictures in the docs:
    python -m tests.dashboards.mlflow_page --tracking-uri sqlite:///runs/demo/mlflow.db --experiment demo \\
        --out-dir docs/img
writes mlflow-front.png (the printed link: the front's view) and mlflow-trials.png (the every-trial view).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from peftsweep.search.tracking.front_view import CHART_X, CHART_Y, VIEW_ID, saved_filter
from peftsweep.search.tracking.client import CONFIG_TAG, METHOD_TAG, SEED_TAG, TRIAL_TAG, client_for
from tests.services import descendants, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOWN_ROWS = 20  # runs MLflow's run list shows at once in the 900-pixel-high page
_SCATTERS = (f"Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.layout && "
             f"p.layout.xaxis.title && p.layout.xaxis.title.text === '{CHART_X}')")


@contextlib.contextmanager
def serve_ui(tracking_uri: str, experiment: str) -> Iterator[tuple[str, int]]:
    """`peftsweep ui` on a store: (the link it printed, its port), once the server answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "peftsweep.cli", "ui", "--tracking-uri", tracking_uri,
                             "--experiment", experiment, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = next(line for line in proc.stdout if "MLflow UI for" in line)
        link = first.split(": ", 1)[1].split()[0]
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and status is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
            except OSError:
                time.sleep(1)
        if status != 200:
            raise RuntimeError("the MLflow UI did not answer within 90 s")
        # MLflow would start its job runner right after the server answers: watched for a while, not once
        started: list[str] = []
        for _ in range(10):
            started = descendants(proc.pid)  # what `peftsweep ui` started: MLflow's UI and its web worker
            assert not any("huey" in c for c in started), (
                f"MLflow's job runner was started beside the UI (see server_env): {started}")
            time.sleep(0.5)
        assert any("mlflow ui" in c for c in started), started
        yield link, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@dataclass
class FrontPage:
    matching: int  # the runs page's "N matching runs"
    listed: list[str]  # run names in its run list
    scatter_y: list[str]  # the y axis of each chart whose x axis is trainable %
    points: set[tuple[str, float, float]]  # (run name, x, y) of the scatter's markers
    load_s: float  # from the request until the count, the chart and every listed run are drawn


def expected_points(tracking_uri: str, experiment: str, view_id: str = VIEW_ID) -> set[tuple[str, float, float]]:
    """(run name, trainable %, val accuracy) of the runs a saved view selects (those with both metrics), as MLflow's
    client returns them; also checks that run names say the method (and, for a confirm run, the configuration it
    repeats and its seed: a confirmed front's view holds them)."""
    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string=saved_filter(client, found.experiment_id, view_id))
    for run in runs:
        tags = run.data.tags
        expected_name = (f"{tags[METHOD_TAG]}-{tags[CONFIG_TAG]}-seed{tags[SEED_TAG]}" if SEED_TAG in tags else
                         f"{tags[METHOD_TAG]}-{tags[TRIAL_TAG]}")
        if run.info.run_name != expected_name:
            raise AssertionError(f"run name {run.info.run_name!r}, expected {expected_name!r}")
    return {(r.info.run_name, round(r.data.metrics[CHART_X], 9), round(r.data.metrics[CHART_Y], 9)) for r in runs
            if CHART_X in r.data.metrics and CHART_Y in r.data.metrics}


def open_view(link: str, screenshot: Path) -> FrontPage:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        start = time.monotonic()
        page.goto(link)
        page.wait_for_function("document.body.innerText.match(/[0-9]+ matching runs?/) !== null", timeout=120_000)
        page.wait_for_function(f"{_SCATTERS}.length > 0", timeout=60_000)
        matching = page.evaluate("document.body.innerText.match(/([0-9]+) matching runs?/)[1]")
        # the run list renders after the count: wait for as many links to runs as runs are counted (the grid draws
        # only the rows in view: at most the first SHOWN_ROWS of a long list)
        page.wait_for_function(f"document.querySelectorAll(\"a[href*='/runs/']\").length >= "
                               f"{min(int(matching), SHOWN_ROWS)}", timeout=60_000)
        load_s = time.monotonic() - start
        listed = page.eval_on_selector_all("a[href*='/runs/']", "links => links.map(a => a.innerText.trim())")
        scatters = page.evaluate(f"""{_SCATTERS}.map(p => ({{y: p.layout.yaxis.title.text,
            points: p.data.flatMap(t => t.x.map((x, i) => [t.text[i], x, t.y[i]]))}}))""")
        assistant = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
        if assistant.count():  # MLflow 3.17 opens its assistant panel beside the runs; the picture is of the runs
            assistant.click()
        page.wait_for_timeout(1500)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        browser.close()
    points = {(n, round(x, 9), round(y, 9)) for s in scatters for n, x, y in s["points"]}
    return FrontPage(int(matching), listed, [s["y"] for s in scatters], points, load_s)


def other_view(link: str, view_id: str) -> str:
    """The printed link, pointed at another of the sweep's saved views."""
    return link.replace(f"viewStateShareKey={VIEW_ID}", f"viewStateShareKey={view_id}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()
    problems = []
    with serve_ui(args.tracking_uri, args.experiment) as (link, _):
        for view_id, picture in ((VIEW_ID, "mlflow-front.png"), ("peftsweeptrials", "mlflow-trials.png")):
            expected = expected_points(args.tracking_uri, args.experiment, view_id)
            page = open_view(other_view(link, view_id), args.out_dir / picture)
            if page.points != expected:
                problems.append(f"{view_id}: scatter shows {sorted(page.points)}, expected {sorted(expected)}")
            print(f"{args.out_dir / picture}: {len(page.points)} runs charted in MLflow ({page.matching} listed)")
    print("\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
