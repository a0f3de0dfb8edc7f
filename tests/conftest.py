import os

import pytest

from peftsweep import console  # noqa: E402
from peftsweep.environment import apply_defaults  # noqa: E402

apply_defaults()  # the settings every entry point runs with
console.install()  # and its console: the library's lines on (captured) stdout
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub

from tests.tiny import CLASSIFY, SHARED_EXPERIMENT, SWEEP_TRIALS, make_causal_dir, make_csv, make_decoder_dir, make_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(make_model_dir(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory) -> str:
    return str(make_decoder_dir(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> str:
    return str(make_causal_dir(tmp_path_factory.mktemp("tiny-causal")))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> str:
    return str(make_csv(tmp_path_factory.mktemp("data") / "toy.csv"))


@pytest.fixture(scope="session")
def tiny_data(tiny_model, tiny_csv):
    from peftsweep.trainers.data import DataSpec
    from peftsweep.trainers.launch import prepare_data

    return prepare_data(tiny_model, DataSpec(train_file=tiny_csv, max_length=16, seed=0), task=CLASSIFY)


def sweep_on_local_ray(config: dict, directory, keep_ray: bool = False):
    """A real sweep of this config (written to `directory`) on a 2-CPU Ray of this process (left running with
    `keep_ray`, for the caller to look at and shut down)."""
    import ray
    import yaml

    from peftsweep.search.config import load_sweep_config
    from peftsweep.search.plan import build_plan
    from peftsweep.search.orchestration.sweep import run_sweep

    path = directory / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        return run_sweep(build_plan(load_sweep_config(path)))
    finally:
        if not keep_ray:
            ray.shutdown()


SHARED_BUILD_WAIT_S = 900  # how long a test waits for another worker to build a shared fixture


def once_per_run(tmp_path_factory, name: str, build):
    """`build()` once for the whole test run, even with test files spread over pytest-xdist workers (each a process
    with its own session fixtures): the first worker to get here builds it under a file lock and leaves it pickled
    in the run's shared temp folder; the others wait for it and read it."""
    import pickle

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    cache = root / f"{name}.pickle"
    # bounded: the worker building it gives up at its own test's timeout (pyproject's pytest timeout)
    with FileLock(str(cache) + ".lock", timeout=SHARED_BUILD_WAIT_S):
        if cache.is_file():
            return pickle.loads(cache.read_bytes())
        value = build()
        cache.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory, tiny_model):
    """A real small sweep: tiny BERT, 5 trials over 3 methods, 2-worker Ray Train trials, local SQLite MLflow (one
    for the whole test run: tests/search/test_sweep.py and tests/dashboards/ share it)."""
    return once_per_run(tmp_path_factory, "finished_sweep", lambda: small_sweep(tmp_path_factory, tiny_model))


def small_sweep(tmp_path_factory, tiny_model: str):
    out = tmp_path_factory.mktemp("sweep")
    # 400 rows: enough steps in 2 epochs for a trial to learn the toy task (the session's 96 rows gave 10 steps, after
    # which every trial could still answer the majority class, and the front was empty)
    csv = str(make_csv(out / "toy.csv", n=400))
    config = {
        "name": "tiny", "model": tiny_model, "output_dir": str(out),
        "data": {"train_file": csv, "max_length": 16},
        "methods": {"lora": {"r": [2, 8]}, "ia3": {}, "prompt": {"num_virtual_tokens": [2, 8]}},
        "train": {"epochs": 2, "batch_size": 16},
        "search": {"algorithm": "tpe", "num_samples": SWEEP_TRIALS, "seed": 1},
        "resources": {"num_workers": 2, "cpus_per_worker": 1},
        "tracking": {"experiment": SHARED_EXPERIMENT},  # not the sweep's name: tracking.experiment takes effect
    }
    return sweep_on_local_ray(config, out)
