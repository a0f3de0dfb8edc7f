"""The private Ray API that search/orchestration/ray_private.py uses is where it expects it; if a Ray upgrade moved it, this
fails naming the Ray version (the one tested is requirements-lock.txt's pin)."""

from __future__ import annotations

from pathlib import Path

import ray

from peftsweep.search.orchestration import ray_private

ROOT = Path(__file__).resolve().parents[2]


def test_the_private_ray_api_used_is_where_it_was():
    from ray.train.v2._internal.execution.controller.controller import TrainController

    ray.remote(num_cpus=0)(TrainController)  # as Ray Train does: its methods then take Ray's `_ray_trace_ctx` too
    problems = ray_private.api_problems()
    assert not problems, (f"ray {ray.__version__} (tested: {ray_private.TESTED_RAY}) moved what "
                          f"search/orchestration/ray_private.py uses: {problems}")


def test_the_tested_ray_is_the_locked_one():
    locked = [line.split("==")[1].strip() for line in (ROOT / "requirements-lock.txt").read_text().splitlines()
              if line.startswith("ray==")]
    assert locked == [ray_private.TESTED_RAY], (locked, ray_private.TESTED_RAY)
    assert ray.__version__ == ray_private.TESTED_RAY, f"installed ray {ray.__version__}, tested {locked}"


def test_only_the_adapter_imports_private_ray_modules():
    private = ("ray.train.v2._internal", "ray._private", "ray.core.generated")
    users = sorted(str(p.relative_to(ROOT)) for folder in ("search", "trainers", "spaces", "dashboards", "peftsweep")
                   for p in (ROOT / folder).rglob("*.py") if any(name in p.read_text() for name in private))
    assert users == ["search/orchestration/ray_private.py"], users


def test_tunes_state_upload_never_races_its_atomic_saves(tmp_path):
    """Tune uploads the driver's state directory while its searcher replaces its state file (a temporary file, then a
    rename): the upload listed the temporary file and failed when it vanished (a traceback in `make demo`; 14 of 200
    uploads here without the fix), leaving temporary files in the storage. With them left out, every upload
    succeeds and the storage holds the state file whole (what --resume reads), nothing else."""
    import pickle
    import threading

    import pyarrow.fs
    from ray.train._internal.storage import _FilesystemSyncer
    from ray.tune.utils.util import _atomic_save

    ray_private.exclude_tmp_files_from_tune_sync()
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir()
    stop, saves = threading.Event(), [0]

    def save_again_and_again() -> None:  # as Tune's searcher does, as fast as it can
        while not stop.is_set():
            _atomic_save({"saves": saves[0], "state": b"x" * 200_000}, str(staging), "searcher-state-1.pkl",
                         "tmp-searcher-state-1.pkl")
            saves[0] += 1

    saver = threading.Thread(target=save_again_and_again)
    saver.start()
    syncer = _FilesystemSyncer(storage_filesystem=pyarrow.fs.LocalFileSystem(), sync_period=0, sync_timeout=60)
    failures = []
    try:
        for _ in range(200):
            syncer.sync_up(str(staging), str(storage))
            try:
                syncer.wait()
            except Exception as exc:  # what Tune logs with its traceback
                failures.append(exc)
    finally:
        stop.set()
        saver.join()
    assert saves[0] > 200 and failures == [], failures[:1]
    assert sorted(p.name for p in storage.iterdir()) == ["searcher-state-1.pkl"]
    assert pickle.loads((storage / "searcher-state-1.pkl").read_bytes())["state"] == b"x" * 200_000


def test_tunes_state_saves_keep_to_five_percent_of_the_driver_and_at_least_the_configured_second():
    """Tune's save of the sweep's state grows with the trial count; with `pace_tune_state_saves` the next save waits
    19 x the last one's seconds (Tune's own rule for its "auto" period), never less than the configured period."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    ray_private.pace_tune_state_saves()
    manager = _ExperimentCheckpointManager(storage=None, checkpoint_period=1)
    periods = []
    for seconds in (0.01, 0.2, 0.02, 1.5):
        manager._update_auto_checkpoint_time(seconds)
        periods.append(manager._checkpoint_period)
    assert periods == [1.0, 0.2 * 19, 1.0, 1.5 * 19]
