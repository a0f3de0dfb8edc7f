"""A trial of one worker trained in the process that runs it (trainers.session.InProcessSession): its reports, its
checkpoints and its restarts, without a Ray Train job. Through a sweep (Tune, early stopping, resume):
tests/search/test_early_stopping.py, whose trials have one worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import torch

from peftsweep.metric_names import RESTARTS, TRAIN_LOSS, VAL_ACCURACY
from peftsweep.spaces import get_method
from peftsweep.trainers import recipe
from peftsweep.trainers.checkpoint import load_checkpoint
from peftsweep.trainers.config import Resources, TrainSettings, TrialConfig
from peftsweep.trainers.faults import recorded_failure
from peftsweep.trainers.launch import InProcessTrainingError, train_in_process
from peftsweep.trainers.session import PARTIAL


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def lora_trial(tiny_model, tiny_data, **resources) -> TrialConfig:
    return TrialConfig(model=tiny_model, task=tiny_data.task, method="lora", hparams=get_method("lora").defaults(),
                       num_labels=tiny_data.num_labels, label_names=tiny_data.label_names,
                       max_length=tiny_data.max_length, train=TrainSettings(epochs=3, batch_size=8),
                       resources=Resources(num_workers=1, cpus_per_worker=1, **resources))


def fail_on_call(monkeypatch, n: int, error: Exception) -> dict:
    """The recipe's n-th call of `train_epoch` raises `error` (each later call trains)."""
    calls = {"n": 0}
    real = recipe.train_epoch

    def train_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "train_epoch", train_epoch)
    return calls


def test_which_trials_train_in_process():
    assert Resources(num_workers=1).trains_in_process
    assert not Resources(num_workers=2).trains_in_process
    assert not Resources(num_workers=1, strategy="fsdp").trains_in_process  # FSDP needs a process group
    assert not Resources(num_workers=1, in_process=False).trains_in_process


def test_a_trial_restarted_after_an_error_continues_exactly_from_its_last_checkpoint(
        local_ray, tiny_model, tiny_data, tmp_path, monkeypatch):
    cfg = lora_trial(tiny_model, tiny_data)
    whole: list[dict] = []
    train_in_process(cfg, tiny_data, run_dir=str(tmp_path / "whole"), forward=whole.append)
    assert [r["epoch"] for r in whole] == [1, 2, 3]
    assert whole[-1]["trains_in"] == "trial process" and whole[-1]["process_group_size"] == 1

    calls = fail_on_call(monkeypatch, 3, RuntimeError("lost"))  # after epoch 2's checkpoint
    broken: list[dict] = []
    run_dir = tmp_path / "broken"
    train_in_process(cfg, tiny_data, run_dir=str(run_dir), forward=broken.append)
    assert calls["n"] == 4
    # epochs 1-2, then after the restart their results again (for a driver that missed them), then epoch 3
    assert [r["epoch"] for r in broken] == [1, 2, 1, 2, 3] and broken[-1][RESTARTS] == 1
    for key in (TRAIN_LOSS, VAL_ACCURACY, "test_accuracy"):
        assert broken[-1][key] == whole[-1][key], key  # bit for bit

    names = sorted(os.listdir(run_dir))
    kept = [n for n in names if n.startswith("checkpoint_")]
    assert len(kept) == 1 and not any(n.startswith(PARTIAL) for n in names)  # train.checkpoints_to_keep: 1
    assert broken[-1]["checkpoint_path"] == str(run_dir / kept[0])
    model, manifest = load_checkpoint(Path(broken[-1]["checkpoint_path"]))
    assert manifest["epoch"] == 3
    assert all(r["checkpoint_path"].startswith(str(run_dir / "checkpoint_")) for r in broken)


def test_out_of_memory_is_not_retried_and_the_reason_is_recorded(local_ray, tiny_model, tiny_data, tmp_path,
                                                                  monkeypatch):
    calls = fail_on_call(monkeypatch, 1, torch.OutOfMemoryError("out of memory"))
    run_dir = str(tmp_path / "oom")
    with pytest.raises(InProcessTrainingError, match="rank 0: OutOfMemoryError: out of memory"):
        train_in_process(lora_trial(tiny_model, tiny_data), tiny_data, run_dir=run_dir, forward=lambda m: None)
    assert calls["n"] == 1
    assert "OutOfMemoryError" in recorded_failure(run_dir)


def test_an_error_that_repeats_fails_after_max_failures_restarts(local_ray, tiny_model, tiny_data, tmp_path,
                                                                 monkeypatch):
    calls = {"n": 0}

    def always(*args, **kwargs):
        calls["n"] += 1
        raise ValueError("bad batch")

    monkeypatch.setattr(recipe, "train_epoch", always)
    cfg = lora_trial(tiny_model, tiny_data)
    with pytest.raises(InProcessTrainingError, match="rank 0: ValueError: bad batch"):
        train_in_process(cfg, tiny_data, run_dir=str(tmp_path / "r"), forward=lambda m: None)
    assert calls["n"] == cfg.train.max_failures + 1


def long_text_data(tmp_path, rows: int = 256):
    """A wider tiny BERT (hidden 128) and 60-word texts cut at 64 tokens: activations that grow visibly with the
    batch (about 4 MiB per activation tensor at batch 128)."""
    import random

    from peftsweep.trainers.data import DataSpec
    from peftsweep.trainers.launch import prepare_data
    from tests.tiny import CLASSIFY, FILLER, KEYWORDS, LABELS, make_model_dir

    model = str(make_model_dir(tmp_path / "wide-bert", hidden=128))
    rng = random.Random(0)
    texts = [(i % 3, " ".join(rng.choices(FILLER, k=59) + [KEYWORDS[i % 3]])) for i in range(rows)]
    csv = tmp_path / "long.csv"
    csv.write_text("text,label\n" + "\n".join(f"{t},{LABELS[label]}" for label, t in texts) + "\n")
    return model, prepare_data(model, DataSpec(train_file=str(csv), max_length=64, seed=0), task=CLASSIFY)


def peak_of(model: str, data, batch_size: int, run_dir: str) -> float:
    reports: list[dict] = []
    cfg = TrialConfig(model=model, task=data.task, method="full", hparams=get_method("full").defaults(),
                      num_labels=data.num_labels, label_names=data.label_names,
                      max_length=data.max_length, train=TrainSettings(epochs=1, batch_size=batch_size),
                      resources=Resources(num_workers=1, cpus_per_worker=1))
    train_in_process(cfg, data, run_dir=run_dir, forward=reports.append)
    return reports[-1]["peak_memory_mb"]


def test_peak_memory_is_the_trials_own_and_rises_with_the_batch(local_ray, tmp_path):
    """CPU: the peak above what the process held before the model was built. A bigger batch needs more; a trial run
    after a bigger one in the same process reports its own peak (not the process's lifetime peak, nor memory the
    last trial freed); the interpreter and its libraries are not counted."""
    model, data = long_text_data(tmp_path)
    big = peak_of(model, data, 128, str(tmp_path / "big"))
    small = peak_of(model, data, 8, str(tmp_path / "small"))
    big_again = peak_of(model, data, 128, str(tmp_path / "big2"))
    resident = resident_mb()
    assert small > 0
    assert big > small + 50 and big_again > small + 50, (small, big, big_again)  # activations: ~4 MiB x dozens
    assert small < resident / 3, (small, resident)  # the process holds torch, transformers, Ray: not the trial's


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
