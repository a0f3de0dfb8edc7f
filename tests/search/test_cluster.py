"""A sweep on a real two-node Ray cluster, tracked by an MLflow server on a real PostgreSQL, submitted as a Ray job.

What it starts: PostgreSQL (Debian's package), `peftsweep tracking-server --auth` on it (MLflow's basic-auth app: the
admin makes a user, the job's driver logs in as that user with MLflow's variables from a `--runtime-env` file, as
docs/cluster.md says), a Ray head and a second Ray node
(`ray start`, one CPU each, so every 2-worker trial spans both nodes: data-parallel training across nodes). The sweep
is `ray job submit --working-dir <repo> -- python -m peftsweep.cli run ...`, as the README's cluster section says.
Everything is checked from the MLflow server (and one query to PostgreSQL), and everything started is stopped.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from peftsweep.search.tracking.client import NODES_TAG, ROLE_TAG, STATUS_TAG, client_for
from tests.services import (VENV_BIN, alive_nodes, background, free_port, http_json, mlflow_healthy, postgres,
                            postgres_bin, processes_mentioning, ray_env, ray_node, wait_for)
from tests.tiny import make_csv

REPO = Path(__file__).resolve().parents[2]
TRIALS = 3
ADMIN = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-secret-for-tests"}
SWEEPER = {"MLFLOW_TRACKING_USERNAME": "sweeper", "MLFLOW_TRACKING_PASSWORD": "sweeper-secret-123"}

pytestmark = [pytest.mark.skipif(postgres_bin() is None and not os.environ.get("CI"),
                                 reason="needs PostgreSQL's server binaries (Debian: apt-get install postgresql); CI "
                                        "installs them"),
              # Two Ray nodes started with `ray start`: with another test's local Ray on the machine at the same
              # time, Ray Train's controller finds two Ray instances and the trial's job never ends.
              pytest.mark.alone]


def as_admin(url: str, body: dict | None = None) -> dict:
    """A request to MLflow's auth REST API with the admin's login (docs/cluster.md)."""
    status, answer = http_json(url, (ADMIN["MLFLOW_AUTH_ADMIN_USERNAME"], ADMIN["MLFLOW_AUTH_ADMIN_PASSWORD"]), body)
    assert status == 200, f"{url}: HTTP {status}"
    return answer


def create_user(url: str) -> None:
    as_admin(f"{url}/api/2.0/mlflow/users/create",
             {"username": SWEEPER["MLFLOW_TRACKING_USERNAME"], "password": SWEEPER["MLFLOW_TRACKING_PASSWORD"]})


def test_sweep_on_two_ray_nodes_tracked_by_mlflow_on_postgresql(tmp_path, tiny_model, monkeypatch):
    # short: Ray's Unix socket paths live under the temp dirs and must stay under 108 characters
    scratch = Path(tempfile.mkdtemp(prefix="psc", dir="/tmp"))
    csv = make_csv(tmp_path / "data.csv", n=400)
    server_port, head_port, dashboard_port = free_port(), free_port(), free_port()
    tracking_uri = f"http://127.0.0.1:{server_port}"
    config = {"name": "cluster", "model": tiny_model, "output_dir": str(tmp_path / "out"),
              # A URI, as object stores are written (s3://...): Ray reads and writes it through pyarrow, and the
              # driver downloads the checkpoints it logs to MLflow. file:// needs no network; both nodes see it.
              "storage": (tmp_path / "shared").as_uri(),
              "data": {"train_file": str(csv), "max_length": 16},
              "methods": {"lora": {}, "ia3": {}, "prompt": {"num_virtual_tokens": [2, 4]}},
              "train": {"epochs": 2, "batch_size": 16},
              "search": {"algorithm": "tpe", "num_samples": TRIALS, "seed": 0},
              "resources": {"num_workers": 2, "cpus_per_worker": 1},
              "tracking": {"uri": tracking_uri}}
    config_path = tmp_path / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(config))

    with postgres(scratch / "pg") as database, \
            background([f"{VENV_BIN}/peftsweep", "tracking-server", "--auth", "--backend-store-uri", database,
                        "--artifacts-destination", str(tmp_path / "artifacts"), "--port", str(server_port)],
                       tmp_path / "mlflow-server.log", env=os.environ | ADMIN) as server, \
            ray_node(scratch / "head", tmp_path / "head.log", head_port=head_port, cpus=1,
                     resources={"head_node": 1}, dashboard_port=dashboard_port) as head:
        wait_for(lambda: mlflow_healthy(tracking_uri), 180, "the MLflow server", server)
        create_user(tracking_uri)
        runtime_env = tmp_path / "runtime-env.yaml"  # the password in a file only its owner reads, not in argv
        runtime_env.write_text(yaml.safe_dump({"env_vars": SWEEPER}))
        runtime_env.chmod(0o600)
        wait_for(lambda: alive_nodes(f"127.0.0.1:{head_port}"), 120, "the Ray head", head)
        with ray_node(scratch / "node2", tmp_path / "node2.log", head_port=head_port, cpus=1,
                      resources={"second_node": 1}) as second:
            nodes = wait_for(lambda: len(n := alive_nodes(f"127.0.0.1:{head_port}")) == 2 and n, 120,
                             "the second Ray node", second)
            job = subprocess.run(
                [f"{VENV_BIN}/ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}",
                 "--working-dir", str(REPO), "--runtime-env", str(runtime_env),
                 "--", "python", "-m", "peftsweep.cli", "run", str(config_path)],
                capture_output=True, text=True, env=ray_env(), timeout=900)
            log = job.stdout + job.stderr
            assert job.returncode == 0 and "succeeded" in log, log[-4000:]
        for key, value in SWEEPER.items():
            monkeypatch.setenv(key, value)
        experiment_id = check_tracking(tracking_uri, database, set(nodes), tmp_path / "artifacts")
        # the sweep logged in as the user the admin made: MLflow gave that user the experiment it created
        permission = as_admin(f"{tracking_uri}/api/3.0/mlflow/users/permissions/get?resource_type=experiment&"
                              f"resource_id={experiment_id}&username={SWEEPER['MLFLOW_TRACKING_USERNAME']}")
        assert permission["permission"] == "MANAGE", permission
    assert processes_mentioning(str(scratch)) == []  # both Ray nodes and PostgreSQL are gone
    assert server.poll() is not None


def check_tracking(uri: str, database: str, node_ids: set[str], artifacts: Path) -> str:
    client = client_for(uri)
    experiment = client.get_experiment_by_name("cluster")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    trials = [r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # every trial recorded once, finished, under the parent
    assert len(trials) == TRIALS
    assert len({r.data.tags["peftsweep.trial_id"] for r in trials}) == TRIALS
    assert all(r.info.status == "FINISHED" and r.data.tags[STATUS_TAG] == "completed" for r in trials)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    for run in trials:
        # each trial's two workers ran one on each node, and DDP kept them identical across the nodes
        assert set(run.data.tags[NODES_TAG].split(",")) == node_ids
        assert run.data.metrics["num_nodes"] == 2
        assert run.data.metrics["ddp_param_divergence"] == 0.0
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    # artifacts went through the server to its artifact store: the summary, and the front's adapters
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"summary", "dashboard"}
    front = [r for r in trials if r.data.tags.get("peftsweep.pareto") == "true"]
    assert front and all(client.list_artifacts(r.info.run_id, "checkpoint") for r in front)
    assert list(artifacts.rglob("adapter_model.safetensors")) or list(artifacts.rglob("*.safetensors"))
    # and the runs are rows in PostgreSQL, not in some local file store
    import sqlalchemy

    engine = sqlalchemy.create_engine(database)
    with engine.connect() as connection:
        count = connection.execute(sqlalchemy.text(
            "select count(*) from runs where experiment_id = :e"), {"e": int(experiment.experiment_id)}).scalar()
    engine.dispose()
    assert count == TRIALS + 1
    return experiment.experiment_id
