"""`peftsweep tracking-server --auth` for real: MLflow's basic-auth app on a SQLite store. Anonymous requests are
refused, a user the admin made is let in, and a sweep's preflight tells a wrong or missing password from an
unreachable server before Ray starts. (A whole sweep logging through it with a user's credentials: the cluster test.)"""

from __future__ import annotations

import os

import pytest
import yaml

from peftsweep.cli import main
from peftsweep.search.tracking.server import ServerSettings, admin_credentials
from tests.services import VENV_BIN, background, free_port, http_json, mlflow_healthy, wait_for

ADMIN, ADMIN_PASSWORD = "admin", "admin-secret-for-tests"


def request(url: str, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    return http_json(url, (user, password) if user is not None else None, body, timeout=10)[0]


def test_auth_server_lets_in_only_its_users_and_preflight_names_the_credentials(tmp_path, tiny_model, tiny_csv,
                                                                              capsys, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"MLFLOW_AUTH_ADMIN_USERNAME": ADMIN, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    command = [f"{VENV_BIN}/peftsweep", "tracking-server", "--auth", "--backend-store-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
               "--port", str(port), "--workers", "1"]
    with background(command, tmp_path / "server.log", env=env) as server:
        wait_for(lambda: mlflow_healthy(url), 180, "the MLflow server with basic auth", server)
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert request(search) == 401  # no credentials
        assert request(search, ADMIN, "wrong-password") == 401
        assert request(search, ADMIN, ADMIN_PASSWORD) == 200
        # the admin makes a user for the sweeps (docs/cluster.md), who is then let in
        assert request(f"{url}/api/2.0/mlflow/users/create", ADMIN, ADMIN_PASSWORD,
                       {"username": "sweeper", "password": "sweeper-secret-123"}) == 200
        assert request(search, "sweeper", "sweeper-secret-123") == 200

        config = tmp_path / "sweep.yaml"
        config.write_text(yaml.safe_dump({"name": "authed", "model": tiny_model, "methods": ["lora"],
                                          "data": {"train_file": tiny_csv},
                                          "tracking": {"uri": url}, "output_dir": str(tmp_path / "out")}))
        for user, password, expected in ((None, None, "needs a user and password, and none were given"),
                                         ("sweeper", "wrong", "needs a user and password, and refused those of "
                                                                "'sweeper'")):
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                monkeypatch.delenv(key, raising=False)
            if user:
                monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
                monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            assert main(["validate", str(config)]) == 2
            err = capsys.readouterr().err
            assert f"tracking.uri: the MLflow server at {url} {expected}" in err, err
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "sweeper")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "sweeper-secret-123")
        assert main(["validate", str(config)]) == 0
        # `peftsweep ui` on a tracking server: the server serves its own UI (MLflow's `ui` refuses an http store)
        capsys.readouterr()
        from mlflow import MlflowClient
        experiment_id = MlflowClient(url).create_experiment("shown")
        assert main(["ui", "--tracking-uri", url, "--experiment", "shown"]) == 0
        assert f"{url}/#/experiments/{experiment_id}/runs?" in capsys.readouterr().out
        assert main(["ui", "--tracking-uri", url]) == 0 and url in capsys.readouterr().out
        assert main(["ui", "--tracking-uri", url, "--experiment", "absent"]) == 2
        assert "--experiment: no experiment 'absent'" in capsys.readouterr().err
    # the server is gone: one line, exit 2 (not MLflow's minutes of retries)
    assert main(["ui", "--tracking-uri", url, "--experiment", "shown"]) == 2
    assert "--tracking-uri: cannot reach the MLflow server" in capsys.readouterr().err
    log = (tmp_path / "server.log").read_text()
    assert ADMIN_PASSWORD not in log and "Every request needs a user" in log


def test_admin_credentials_come_from_the_environment_or_a_private_file_never_the_command_line(tmp_path,
                                                                                              monkeypatch):
    for key in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    settings = ServerSettings("sqlite:///x.db", str(tmp_path), auth=True)
    with pytest.raises(Exception, match="set MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD"):
        admin_credentials(settings)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "short")
    with pytest.raises(Exception, match="shorter than 12 characters"):
        admin_credentials(settings)
    file = tmp_path / "admin.txt"
    file.write_text("username: boss\npassword: a-long-enough-password\n")
    file.chmod(0o644)
    from_file = ServerSettings("sqlite:///x.db", str(tmp_path), auth=True, auth_credentials=str(file))
    with pytest.raises(Exception, match="can be read by other users; chmod 600"):
        admin_credentials(from_file)
    file.chmod(0o600)
    assert admin_credentials(from_file) == ("boss", "a-long-enough-password")
    # the credentials file is an --auth option
    assert main(["tracking-server", "--auth-credentials", str(file), "--backend-store-uri", "sqlite:///x.db"]) == 2


def test_server_config_caches_checked_passwords_and_mlflow_reads_it(tmp_path, monkeypatch):
    """Without the cache every request hashes the password (PBKDF2, 0.4 s of a core here), and a sweep's driver waits
    that long per logging call; the config file is MLflow's, so MLflow's own reader must see the setting."""
    from mlflow.server.auth.config import read_auth_config

    from peftsweep.search.tracking.server import AUTH_CACHE_TTL_S, auth_env

    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
    env = auth_env(ServerSettings("sqlite:///users.db", str(tmp_path), auth=True), tmp_path)
    config_file = tmp_path / "basic_auth.ini"
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(config_file)
    assert ADMIN_PASSWORD not in config_file.read_text() and oct(config_file.stat().st_mode)[-3:] == "600"
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config_file))
    config = read_auth_config()
    assert config.auth_cache_ttl_seconds == AUTH_CACHE_TTL_S > 0
    assert (config.database_uri, config.default_permission) == ("sqlite:///users.db", "READ")
