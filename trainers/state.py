"""What a trial needs to continue exactly where its last checkpoint left off, beside the method's own files.

`training_state.pt` holds the trainable tensors, the optimizer and LR-scheduler state, the epochs done and the running
totals. The method's files (adapter-only for PEFT) are what users load; this file is what a restarted worker loads.
It is kept out of MLflow (it is for resuming, not for inference).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

TRAINING_STATE_FILE = "training_state.pt"


@dataclass
class Progress:
    """Counters that carry across restarts."""

    epoch: int = 0  # epochs completed
    train_seconds: float = 0.0
    examples: int = 0  # training examples seen, all ranks
    restarts: int = 0  # how many times this trial continued from a checkpoint
    history: list[dict[str, Any]] = field(default_factory=list)  # what each epoch reported


def save_training_state(directory: Path, model: nn.Module, optimizer, scheduler, progress: Progress) -> None:
    trainable = {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
    torch.save({"trainable": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "progress": asdict(progress)}, Path(directory) / TRAINING_STATE_FILE)


def read_training_state(directory: Path) -> dict[str, Any] | None:
    """The saved state, read into memory (a remote checkpoint's local copy may vanish after); None if absent."""
    path = Path(directory) / TRAINING_STATE_FILE
    if not path.is_file():
        return None
    # weights_only: the file holds tensors and plain containers only, so loading it runs no pickled code.
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_trainable(state: dict[str, Any], model: nn.Module) -> Progress:
    """Put the saved trainable tensors into `model` (before DDP wraps it); returns the progress counters."""
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state["trainable"]]
    unexpected = [name for name in state["trainable"] if name not in params]
    reshaped = [f"{name} {tuple(value.shape)} -> {tuple(params[name].shape)}" for name, value in
                state["trainable"].items() if name in params and value.shape != params[name].shape]
    if missing or unexpected or reshaped:
        from peftsweep.trainers.faults import FatalTrialError  # a restart would only fail again

        raise FatalTrialError(f"the checkpoint does not match the model (another configuration wrote it): missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}, other shapes {reshaped[:3]}")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value.to(params[name].device))
    return Progress(**state["progress"])


def restore_optimizer(state: dict[str, Any], optimizer, scheduler) -> None:
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
