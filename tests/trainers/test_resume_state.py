"""Continuing from a checkpoint's training state trains exactly like never stopping, for every registered method."""

from __future__ import annotations

import pytest
import torch

from peftsweep.spaces import REGISTRY
from peftsweep.trainers.config import TrainSettings
from peftsweep.trainers.faults import FatalTrialError, NonFiniteLossError, raise_if_fatal_recorded, record_fatal
from peftsweep.trainers.classification import train_loader
from peftsweep.trainers.loop import begin_epoch, optimizer_for, seed_everything, train_epoch
from peftsweep.trainers.model import build_model
from peftsweep.trainers.state import (TRAINING_STATE_FILE, Progress, read_training_state, restore_optimizer, restore_trainable,
                            save_training_state)
from tests.tiny import CLASSIFY

CPU = torch.device("cpu")
SETTINGS = TrainSettings(batch_size=8, seed=3)
STEPS_PER_EPOCH = 4


def fresh(tiny_model, data, method):
    seed_everything(SETTINGS.seed)
    hp = REGISTRY[method].defaults() | ({"num_virtual_tokens": 4} if "num_virtual_tokens" in REGISTRY[method].params
                                        else {})
    model, _, _ = build_model(tiny_model, method, hp, data.label_names, device=CPU, pad_token_id=data.pad_token_id, task=CLASSIFY)
    loader = train_loader(data.splits["train"], SETTINGS.batch_size, data.pad_token_id, SETTINGS.seed)
    optimizer, scheduler = optimizer_for(model, hp["lr"], SETTINGS, total_steps=3 * STEPS_PER_EPOCH)
    return model, loader, optimizer, scheduler


def run_epoch(model, loader, optimizer, scheduler, epoch):
    begin_epoch(loader, SETTINGS.seed, epoch)
    train_epoch(model, loader, optimizer, scheduler, SETTINGS, CPU, max_steps=STEPS_PER_EPOCH)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", list(REGISTRY))
def test_continuing_from_training_state_equals_never_stopping(method, tiny_model, tiny_data, tmp_path):
    model, loader, optimizer, scheduler = fresh(tiny_model, tiny_data, method)
    run_epoch(model, loader, optimizer, scheduler, 1)
    save_training_state(tmp_path, model, optimizer, scheduler, Progress(epoch=1, examples=32))
    for epoch in (2, 3):
        run_epoch(model, loader, optimizer, scheduler, epoch)
    uninterrupted = trainable(model)

    model, loader, optimizer, scheduler = fresh(tiny_model, tiny_data, method)  # a new worker process, in effect
    before = trainable(model)
    state = read_training_state(tmp_path)
    progress = restore_trainable(state, model)
    restore_optimizer(state, optimizer, scheduler)
    assert progress.epoch == 1 and progress.examples == 32
    for epoch in (2, 3):
        run_epoch(model, loader, optimizer, scheduler, epoch)
    resumed = trainable(model)

    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name
    # and the restored run did not simply start over: a fresh model trained for epochs 2-3 differs
    assert any(not torch.equal(before[n], uninterrupted[n]) for n in before)


def test_training_state_holds_only_trainable_tensors(tiny_model, tiny_data, tmp_path):
    model, _, optimizer, scheduler = fresh(tiny_model, tiny_data, "lora")
    save_training_state(tmp_path, model, optimizer, scheduler, Progress())
    saved = torch.load(tmp_path / TRAINING_STATE_FILE, weights_only=True)["trainable"]
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert read_training_state(tmp_path / "absent") is None


def test_a_recorded_fatal_failure_stops_a_restarted_worker(tmp_path):
    run_dir = str(tmp_path / "trial_0")
    raise_if_fatal_recorded(run_dir)  # nothing recorded: no error
    record_fatal(run_dir, NonFiniteLossError("loss is nan at step 3"))
    with pytest.raises(FatalTrialError, match="NonFiniteLossError: loss is nan at step 3"):
        raise_if_fatal_recorded(run_dir)


def test_a_checkpoint_of_another_shape_is_refused_as_fatal(tiny_model, tiny_data):
    """Restoring r=16 LoRA tensors into an r=8 model: a FatalTrialError naming the shapes (a restart would only fail
    again), not a tensor-size traceback from copy_."""
    wide, _, _ = build_model(tiny_model, "lora", REGISTRY["lora"].defaults() | {"r": 16}, tiny_data.label_names,
                             device=CPU, task=CLASSIFY)
    narrow, _, _ = build_model(tiny_model, "lora", REGISTRY["lora"].defaults() | {"r": 8}, tiny_data.label_names,
                               device=CPU, task=CLASSIFY)
    saved = {"trainable": {n: p.detach() for n, p in wide.named_parameters() if p.requires_grad},
             "progress": {}}
    with pytest.raises(FatalTrialError, match=r"other shapes \[.*\(16, .*-> \(8, "):
        restore_trainable(saved, narrow)
