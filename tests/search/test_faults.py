"""Faults done for real: a SIGKILLed Ray Train worker, a trial whose loss turns NaN (a SIGKILLed sweep driver:
tests/search/test_early_stopping.py).

Each test runs `peftsweep run` as a separate process (as a user would) and checks the outcome from MLflow alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from peftsweep.search.tracking.client import CHECKPOINT_TAG, FAILURE_TAG, PARETO_TAG, ROLE_TAG, STATUS_TAG, client_for
from tests.tiny import make_csv, make_model_dir

EPOCHS = 3


def write_config(directory: Path, model: str, csv: str, **sections) -> Path:
    config = {"name": "faults", "model": model, "output_dir": str(directory / "out"),
              "data": {"train_file": csv, "max_length": 16},
              "train": {"epochs": EPOCHS, "batch_size": 16},
              "resources": {"num_workers": 2, "cpus_per_worker": 1}} | sections
    path = directory / "faults.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, *flags: str) -> subprocess.Popen:
    path = config.parent / f"driver{len(list(config.parent.glob('driver*.log')))}.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # its own process group: everything the driver started can be cleaned up after the test
    with open(path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "peftsweep.cli", "run", str(config), *flags], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=config.parent, start_new_session=True)
    proc.log_path = path  # what it printed, for the message when it ends unexpectedly
    return proc


def log_tail(proc: subprocess.Popen, chars: int = 4000) -> str:
    path = getattr(proc, "log_path", None)
    return f"\n--- {path.name} (end) ---\n{path.read_text()[-chars:]}" if path and path.is_file() else ""


def started(config: Path, log: str = "driver0.log") -> bool:
    """The driver has made its MLflow store and started a trial (reading the store earlier would race its creation)."""
    path = config.parent / log
    return path.is_file() and "start " in path.read_text()


def trial_runs(config: Path) -> list:
    out = config.parent / "out"
    client = client_for(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("faults")
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id], max_results=100)
            if r.data.tags.get(ROLE_TAG) == "trial"]


def wait_until(condition, proc: subprocess.Popen, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the sweep ended (rc {proc.returncode}) before {what}{log_tail(proc)}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}{log_tail(proc)}")


def finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def history(config: Path, run_id: str) -> list[int]:
    client = client_for(f"sqlite:///{config.parent / 'out' / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, "val_accuracy"))


def check_checkpoints_kept_for_the_front_only(config: Path, runs) -> None:
    """With delete_dominated_checkpoints and checkpoints_to_keep 2."""
    client = client_for(f"sqlite:///{config.parent / 'out' / 'mlflow.db'}")
    dominated = [r for r in runs if r.data.tags[PARETO_TAG] == "false"]
    assert dominated, "this sweep is expected to have a dominated trial"
    for run in runs:
        run_dir = Path(run.data.tags[CHECKPOINT_TAG]).parent
        kept = sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
        logged = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        if run in dominated:
            assert kept == [] and logged == set() and run.data.tags["peftsweep.checkpoint_deleted"] == "true"
        else:  # at most checkpoints_to_keep per trial; MLflow has the adapter, not the resume-only state
            assert len(kept) == min(2, int(run.data.metrics["epochs_completed"])), kept  # one per epoch, 2 kept
            assert "checkpoint/adapter_model.safetensors" in logged and "checkpoint/training_state.pt" not in logged
            assert (run_dir / kept[-1] / "training_state.pt").is_file()


def nan_beyond_position(model_dir: Path, position: int) -> str:
    """A copy of the tiny model whose position embeddings from `position` on are NaN: prompt tuning (virtual tokens
    push the text to later positions) gets a NaN loss; methods that keep inputs under `position` tokens do not."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight[position:] = float("nan")
    model.save_pretrained(model_dir)
    return str(model_dir)


def ray_train_workers(*drivers: subprocess.Popen) -> list[int]:
    """The Ray Train workers of these `peftsweep run` processes (each started in a session of its own, which Ray's
    processes keep even when the driver is gone), or, without any, those of this process's own Ray. Never another
    test's: the suite may run tests side by side."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid=,sid=,args="], capture_output=True, text=True).stdout
    rows = []
    for line in ps.splitlines():
        pid, ppid, sid, *args = line.split(None, 3)
        rows.append((int(pid), int(ppid), int(sid), args[0] if args else ""))
    if drivers:
        sessions = {d.pid for d in drivers}
        return [pid for pid, _, sid, args in rows if sid in sessions and "RayTrainWorker" in args]
    mine = descendants()
    return [pid for pid, _, _, args in rows if pid in mine and "RayTrainWorker" in args]


def test_killed_worker_restarts_from_checkpoint_and_nan_trial_fails_alone(tmp_path):
    model = tmp_path / "model"
    make_model_dir(model)
    nan_beyond_position(model, 12)  # toy sentences are at most 11 tokens long
    csv = str(make_csv(tmp_path / "data.csv", n=900))
    config = write_config(tmp_path, str(model), csv,
                          methods={"lora": {}, "prompt": {"num_virtual_tokens": 8}},
                          search={"algorithm": "tpe", "num_samples": 2, "seed": 0})
    proc = start(config)
    try:
        # the first trial has checkpointed its first epoch: kill one of its two Ray Train workers
        wait_until(lambda: started(config), proc, 120, "the first trial's start")
        first = wait_until(lambda: [r for r in trial_runs(config) if "val_accuracy" in r.data.metrics], proc, 300,
                           "the first trial's first epoch")[0]
        workers = ray_train_workers(proc)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        assert finish(proc) == 0, log_tail(proc)
    finally:
        kill_group(proc)

    runs = {r.data.params["method"]: r for r in trial_runs(config)}
    assert sorted(runs) == ["lora", "prompt"]  # one run per trial, the restarted one included
    killed = next(r for r in runs.values() if r.info.run_id == first.info.run_id)
    assert killed.info.status == "FINISHED" and killed.data.tags[STATUS_TAG] == "completed"
    assert killed.data.metrics["restarts"] == 1 and killed.data.metrics["ddp_param_divergence"] == 0.0
    assert history(config, killed.info.run_id) == list(range(1, EPOCHS + 1))
    assert sum(r.data.metrics.get("restarts", 0) for r in runs.values()) == 1

    prompt = runs["prompt"]
    assert prompt.info.status == "FAILED" and prompt.data.tags[STATUS_TAG] == "failed"
    assert "NonFiniteLossError: loss is nan" in prompt.data.tags[FAILURE_TAG]
    # the failure stayed with its trial: the others completed, the sweep finished
    assert runs["lora"].data.tags[STATUS_TAG] == "completed"
    assert "FAILED" in (config.parent / "driver0.log").read_text()


def test_a_trial_actor_killed_by_itself_gives_its_placement_group_back(tmp_path, tiny_model, tiny_csv):
    """A trial's actor SIGKILLed (as the OOM killer would) takes its Train controller with it; the placement group
    its workers held (both CPUs here) used to stay reserved until the driver exited, so the next trials waited for
    ever. Now the sweep's TrainJobs actor removes it: the other trial completes and nothing stays reserved."""
    import threading

    import ray

    from tests.conftest import sweep_on_local_ray

    config = {"name": "killed-actor", "model": tiny_model, "output_dir": str(tmp_path / "out"),
              "data": {"train_file": tiny_csv, "max_length": 16}, "methods": {"lora": {}, "ia3": {}},
              "train": {"epochs": 2, "batch_size": 16},
              # a bound: with the group leaked the second trial never starts, and the sweep ends at its budget
              "search": {"algorithm": "random", "num_samples": 2, "seed": 0, "max_concurrent_trials": 1,
                         "time_budget_s": 300},
              "resources": {"num_workers": 2, "cpus_per_worker": 1}}
    killed: list[int] = []

    def kill_first_trial_actor() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            if len(ray_train_workers()) == 2:  # the first trial's job is training
                time.sleep(2)
                actors = trial_actors()
                if actors:
                    os.kill(actors[0], signal.SIGKILL)
                    killed.append(actors[0])
            time.sleep(0.5)

    thread = threading.Thread(target=kill_first_trial_actor, daemon=True)
    thread.start()
    try:
        outcome = sweep_on_local_ray(config, tmp_path, keep_ray=True)
        reserved = [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
    finally:
        ray.shutdown()
    assert killed, "no trial actor was found to kill"
    records = outcome.summary.trials
    statuses = sorted(r.status for r in records)
    assert statuses == ["completed", "failed"], statuses
    assert outcome.status == "finished"
    assert reserved == [], reserved


def trial_actors() -> list[int]:
    """This process's Ray's Tune trial actors (the function trainable's process), oldest first."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return sorted(int(line.split(None, 1)[0]) for line in ps.splitlines()
                  if "ray::ImplicitFunc" in line and int(line.split(None, 1)[0]) in descendants())


def descendants() -> set[int]:
    """The pids of every process this one started, their children's included."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in ps.splitlines():
        pid, ppid = map(int, line.split())
        children.setdefault(ppid, []).append(pid)
    mine, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in mine:
                mine.add(child)
                todo.append(child)
    return mine
