"""Which sweep `peftsweep run` continues or starts, decided from output_dir before anything runs."""

from __future__ import annotations

import re

import pytest
import yaml

from peftsweep.cli import main
from peftsweep.search.orchestration.resume import SweepState, config_changes, read_state, sweep_to_resume, write_state
from peftsweep.errors import UserError


def state(status: str = "running", **config) -> SweepState:
    return SweepState("parent123", "1", "sqlite:///x.db", "/out/ray/t-parent12", {"name": "t"} | config, status)


def test_state_round_trips(tmp_path):
    assert read_state(tmp_path) is None
    write_state(tmp_path, state(search={"num_samples": 4}))
    assert read_state(tmp_path) == state(search={"num_samples": 4})


def test_config_changes_name_the_dotted_key():
    assert config_changes({"search": {"num_samples": 4, "seed": 0}}, {"search": {"num_samples": 8, "seed": 0}}) == [
        "search.num_samples: the sweep started with 4, the config now says 8"]


@pytest.mark.parametrize("saved,resume,restart,expected", [
    (None, False, False, None),  # nothing there: a new sweep
    ("finished", False, False, None),  # a finished sweep: a new one beside it
    ("running", True, False, "resume"),
    ("running", False, True, None),  # --restart abandons it
    ("running", False, False, "holds an interrupted sweep"),
    (None, True, False, "holds no sweep to resume"),
    ("finished", True, False, "already ended (finished)"),
    ("running", True, True, "choose one"),
])
def test_sweep_to_resume(saved, resume, restart, expected, tmp_path):
    if saved:
        write_state(tmp_path, state(saved))
    if expected in (None, "resume"):
        found = sweep_to_resume(tmp_path, {"name": "t"}, resume, restart)
        assert (found is not None) == (expected == "resume")
    else:
        with pytest.raises(UserError, match=re.escape(expected)):
            sweep_to_resume(tmp_path, {"name": "t"}, resume, restart)


def test_resume_with_another_config_exits_2_naming_the_key(tmp_path, tiny_model, tiny_csv, capsys):
    out = tmp_path / "out"
    config = {"name": "t", "model": tiny_model, "output_dir": str(out), "data": {"train_file": tiny_csv},
              "methods": ["lora"], "search": {"num_samples": 2}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--resume"]) == 2
    assert "--resume" in capsys.readouterr().err and not out.exists()

    from peftsweep.search.config import load_sweep_config

    started = load_sweep_config(path).model_dump(mode="json")
    write_state(out, state(**{k: v for k, v in started.items() if k != "name"}))
    assert main(["run", str(path), "--set", "search.num_samples=3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "search.num_samples: the sweep started with 2, the config now says 3" in err
    assert main(["run", str(path)]) == 2  # an interrupted sweep is never silently replaced
    err = capsys.readouterr().err
    assert "continue it with --resume" in err and "--restart" in err


def test_restart_closes_the_abandoned_sweeps_runs_as_killed(tmp_path, capsys):
    """`run --restart` on an interrupted sweep: its parent run and its unfinished trial runs are closed as KILLED;
    its finished trials stay FINISHED (restart decides it before anything runs: sweep_to_resume, then abandon)."""
    from peftsweep.search.orchestration.sweep import abandon
    from peftsweep.search.tracking.client import ROLE_TAG, client_for, ensure_experiment, start_parent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    experiment_id = ensure_experiment(client, "t", tmp_path / "artifacts")
    parent = start_parent(client, experiment_id, "t", {"algorithm": "tpe"})
    trial = {"mlflow.parentRunId": parent, ROLE_TAG: "trial"}
    running = client.create_run(experiment_id, run_name="running", tags=trial).info.run_id
    finished = client.create_run(experiment_id, run_name="finished", tags=trial).info.run_id
    client.set_terminated(finished, "FINISHED")
    interrupted = SweepState(parent, experiment_id, uri, str(tmp_path / "ray"), {"name": "t"}, "running")
    write_state(tmp_path, interrupted)
    assert sweep_to_resume(tmp_path, {"name": "t"}, resume=False, restart=True) is None  # a new sweep, not resumed
    abandon(client, interrupted)
    status = {run_id: client.get_run(run_id).info.status for run_id in (parent, running, finished)}
    assert status == {parent: "KILLED", running: "KILLED", finished: "FINISHED"}
    assert f"abandoned the interrupted sweep (MLflow parent run {parent})" in capsys.readouterr().out
