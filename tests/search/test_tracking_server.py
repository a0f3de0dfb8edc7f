"""`peftsweep tracking-server`: refuses what cannot work in one line, before starting MLflow. (The server itself, on
PostgreSQL, is exercised in tests/search/test_cluster.py.)"""

from __future__ import annotations

import pytest

from peftsweep.cli import main
from peftsweep.search.tracking.server import ServerSettings, redacted, server_command, server_env


def test_password_is_hidden_when_printed():
    assert redacted("postgresql://mlflow:s3cret@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert redacted("sqlite:///x.db") == "sqlite:///x.db"


def test_server_binds_loopback_by_default_and_proxies_artifacts():
    command = server_command(ServerSettings("postgresql://u:p@h/db", "/srv/artifacts"), ["--dev"])
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--serve-artifacts" in command and command[-1] == "--dev"
    # no line per request; a worker slow to start on a busy machine is not taken for dead
    quiet = "--uvicorn-opts=--no-access-log --timeout-worker-healthcheck 120"
    assert quiet in command and "--app-name" not in command
    assert quiet not in server_command(ServerSettings("sqlite:///x", "a"), ["--uvicorn-opts", "--log-level debug"])
    auth = server_command(ServerSettings("sqlite:///x", "a", auth=True), [])
    assert auth[auth.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--artifacts-destination") + 1] == "/srv/artifacts"


def test_unreachable_database_exits_2_in_one_line_without_the_password(capsys, tmp_path):
    # port 9 (discard) on loopback: nothing listens there
    code = main(["tracking-server", "--backend-store-uri", "postgresql://u:topsecret@127.0.0.1:9/db",
                 "--artifacts-destination", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot connect to postgresql://u:***@127.0.0.1:9/db" in err and "topsecret" not in err
    assert not (tmp_path / "a").exists()  # nothing started, nothing made


def test_missing_or_wrong_backend_uri_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    assert main(["tracking-server", "--backend-store-uri", "http://example.org"]) == 2
    assert "is not a database URI" in capsys.readouterr().err


def test_mlflow_job_runner_is_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert server_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    assert server_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


@pytest.mark.alone  # it keeps every core but one busy: nothing else of the suite runs beside it
def test_ui_answers_while_the_cpus_are_busy_and_leaves_nothing_behind(tmp_path):
    """`peftsweep ui` beside processes that keep every core busy (as a sweep does): it says when it is ready, keeps
    answering (its one web worker runs without uvicorn's supervisor, which killed slow workers), prints no other
    library's start-up lines, and SIGTERM stops it with every process it started (none left on the port)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.services import descendants, free_port, processes_mentioning, stop_group

    # every core but one busy (the test runs alone: make test's second pass)
    loops = max(1, (os.cpu_count() or 2) - 1)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(loops)]
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "peftsweep.cli", "ui", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", str(port)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        before = []
        for line in ui.stdout:
            before.append(line)
            if "MLflow UI for" in line or "did not answer" in line:
                break
        assert "MLflow UI for" in before[-1], "".join(before)
        # ours, and MLflow's one line on its security middleware; no uvicorn INFO lines, no Starlette warning
        assert len(before) <= 3 and not any(noise in "".join(before) for noise in (
            "INFO", "Warning", "Registry store URI")), "".join(before)
        started = descendants(ui.pid)
        # one web worker, run without uvicorn's supervisor (which, with several, kills workers slow to answer)
        assert any("mlflow ui" in c for c in started) and not any("spawn_main" in c for c in started), started
        for _ in range(10):  # answering, not only once
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).status == 200
            time.sleep(1)
        assert ui.poll() is None
        ui.send_signal(signal.SIGTERM)  # as a service manager or `kill` stops it
        assert ui.wait(timeout=60) == 0
        # nothing it started is left (before, MLflow's UI and uvicorn stayed on the port as orphans)
        assert processes_mentioning(str(tmp_path)) == []
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # fails while anything still listens there
    finally:
        for process in busy:
            process.kill()
        stop_group(ui)
