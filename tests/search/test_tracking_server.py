"""`peftsweep tracking-server`: refuses what cannot work in one line, before starting MLflow. (The server itself, on
PostgreSQL, is exercised in tests/search/test_cluster.py.)"""

from __future__ import annotations

from peftsweep.cli import main
from peftsweep.search.tracking_server import ServerSettings, redacted, server_command, server_env


def test_password_is_hidden_when_printed():
    assert redacted("postgresql://mlflow:s3cret@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert redacted("sqlite:///x.db") == "sqlite:///x.db"


def test_server_binds_loopback_by_default_and_proxies_artifacts():
    command = server_command(ServerSettings("postgresql://u:p@h/db", "/srv/artifacts"), ["--dev"])
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--serve-artifacts" in command and command[-1] == "--dev"
    assert "--uvicorn-opts=--no-access-log" in command  # no line per request
    assert "--uvicorn-opts=--no-access-log" not in server_command(ServerSettings("sqlite:///x", "a"),
                                                                  ["--uvicorn-opts", "--log-level debug"])
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
