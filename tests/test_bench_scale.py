"""bench/scale.py (a thousand trials) in its quick modes: its own file, so that the test runner can give it a worker
of its own beside the other benchmarks (tests/test_bench.py). No timing is asserted."""

from __future__ import annotations

import json
import os

import pytest

from tests.dashboards.mlflow_page import CHROMIUM
from tests.services import postgres_bin
from tests.test_bench import run


def test_scale_quick(tmp_path):
    """100 stand-in trials through the real driver (trainers/stand_in.py): every trial logged once, none lost, the
    summary and the dashboard built from the store."""
    out = run("scale.py", "--json", str(tmp_path / "s.json"))
    figures = json.loads((tmp_path / "s.json").read_text())
    assert figures["trials"] == figures["runs"] == figures["distinct_trials"] == 100, out[-1500:]
    assert figures["mlflow_runs"] == figures["mlflow_trial_ids"] == 100 and figures["duplicated_trials"] == []
    assert figures["statuses"]["failed"] == 0 and figures["front"] >= 1
    assert figures["statuses"]["completed"] + figures["statuses"]["early_stopped"] == 100
    assert [b["trials"] for b in figures["blocks"]] == [50, 100]
    assert all(b["mlflow_calls_per_trial"] > 0 and b["suggest_ms_per_trial"] > 0 for b in figures["blocks"])
    assert figures["dashboard_html_mb"] > 0 and figures["summary_s"] > 0


def test_tpe_history_quick(tmp_path):
    """bench/tpe_history.py: the bounded and the unbounded TPE side by side, ms per ask and hypervolume per block."""
    out = run("tpe_history.py", "--json", str(tmp_path / "t.json"))
    figures = json.loads((tmp_path / "t.json").read_text())
    assert [r["tpe"] for r in figures["runs"]] == ["bounded", "unbounded"] and figures["history"] == 40, out
    for r in figures["runs"]:
        assert len(r["ask_ms_per_block"]) == len(r["hypervolume_per_block"]) == 2
        assert all(ms > 0 for ms in r["ask_ms_per_block"]) and r["hypervolume_per_block"][-1] > 0
    assert "final hypervolume" in out


@pytest.mark.skipif((postgres_bin() is None or CHROMIUM is None) and not os.environ.get("CI"),
                    reason="needs PostgreSQL's server binaries and Chromium (CI installs both)")
def test_scale_on_a_tracking_server_with_a_driver_kill_and_the_views_load(tmp_path):
    """--tracking server --kill-at --browser on a dozen trials: MLflow's server on PostgreSQL, the driver SIGKILLed
    after 6 trials and the sweep resumed (every trial one run, none twice), the views opened in Chromium."""
    out = run("scale.py", "--trials", "12", "--concurrent", "3", "--block", "6", "--tracking", "server",
              "--kill-at", "6", "--browser", "--json", str(tmp_path / "s.json"), quick=False)
    figures = json.loads((tmp_path / "s.json").read_text())
    assert figures["tracking"] == "server" and figures["killed_after"] >= 6, out[-1500:]
    said = f"{figures}\n{out[-6000:]}"
    assert figures["mlflow_runs"] == figures["mlflow_trial_ids"] == 12 and figures["duplicated_trials"] == [], said
    assert figures["mlflow_statuses"] == {"FINISHED": 12} and "resumed" in out, said
    assert figures["front_view_runs"] == figures["front"] >= 1 and figures["trials_view_runs"] == 12
    assert figures["front_view_load_s"] > 0 and figures["trials_view_load_s"] > 0
