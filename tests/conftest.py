import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny import make_csv, make_decoder_dir, make_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(make_model_dir(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory) -> str:
    return str(make_decoder_dir(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> str:
    return str(make_csv(tmp_path_factory.mktemp("data") / "toy.csv"))


@pytest.fixture(scope="session")
def tiny_data(tiny_model, tiny_csv):
    from trainers.data import DataSpec
    from trainers.launch import prepare_data

    return prepare_data(tiny_model, DataSpec(train_file=tiny_csv, max_length=16, seed=0))
