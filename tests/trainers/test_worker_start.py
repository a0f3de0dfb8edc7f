"""Starting Ray and a trial's workers is bounded: an absent cluster is said at once, a trial whose workers cannot be
placed fails after trainers.launch.WORKER_START_TRIES tries with the reason, and Ray's workers run at the ordinary
priority (at Ray's niceness 15 they crawled beside any other busy process: the CI hang of bench/searchers.py)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import ray
from ray.train import TrainingFailedError
from ray.util.placement_group import placement_group, remove_placement_group

from peftsweep.errors import UserError
from peftsweep.search.orchestration.cluster import connect_ray
from peftsweep.trainers.config import Resources, TrainSettings, TrialConfig
from peftsweep.trainers.faults import training_failure
from peftsweep.trainers.launch import WORKER_START_TRIES, run_trial

START_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_an_absent_cluster_is_said_at_once(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(UserError, match=f"Ray: nothing answers at 127.0.0.1:{port}"):
        connect_ray()
    assert time.monotonic() - start < 10 and not ray.is_initialized()


def test_ray_workers_run_at_the_ordinary_priority(local_ray):
    assert os.environ["RAY_worker_niceness"] == "0"  # peftsweep.environment's default, set by conftest
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == 0


def test_a_trial_whose_workers_cannot_be_placed_fails_with_the_reason(local_ray, tiny_model, monkeypatch, tiny_data,
                                                                     tmp_path: Path):
    # Ray Train hands the launching process's value to its controller: a short wait per try for this trial
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(START_TIMEOUT_S))
    held = placement_group([{"CPU": 2}])  # every CPU of this Ray held by other work
    ray.get(held.ready(), timeout=60)
    cfg = TrialConfig(model=tiny_model, task=tiny_data.task, method="lora", hparams={"r": 2, "lr": 1e-3},
                      num_labels=tiny_data.num_labels,
                      label_names=tiny_data.label_names, max_length=tiny_data.max_length,
                      train=TrainSettings(epochs=1, batch_size=8), resources=Resources(num_workers=1, cpus_per_worker=1))
    start = time.monotonic()
    try:
        with pytest.raises(TrainingFailedError) as failed:
            run_trial(cfg, ray.put(tiny_data), storage_path=str(tmp_path), name="unplaced")
    finally:
        remove_placement_group(held)
    elapsed = time.monotonic() - start
    assert WORKER_START_TRIES * START_TIMEOUT_S <= elapsed < WORKER_START_TRIES * START_TIMEOUT_S + 60, elapsed
    reason = training_failure(failed.value)
    assert reason.startswith(f"the Ray Train workers did not start ({WORKER_START_TRIES} tries): ") and \
        f"timed out after {START_TIMEOUT_S:.1f} seconds waiting for 1 workers" in reason, reason
