"""What a trial needs to continue exactly where its last checkpoint left off, beside the method's own files.

`training_state.pt` holds the trainable tensors, the optimizer and LR-scheduler state, the epochs done and the running
totals. The method's files (adapter-only for PEFT) are what users load; this file is what a restarted worker loads.
It is kept out of MLflow (it is for resuming, not for inference). Under FSDP the tensors and the optimizer state are
sharded instead (`training_shards/`, one file per rank, through torch.distributed.checkpoint), and the file holds the
rest.
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
    tokens: int = 0  # training tokens seen (padding not counted), all ranks
    restarts: int = 0  # how many times this trial continued from a checkpoint
    base_general_loss: float | None = None  # `forgetting:`: the base's loss on the general text, before step one
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


# Under FSDP (trainers.sharding) each rank saves its own shard of the trainable tensors and the optimizer state here,
# through torch.distributed.checkpoint; rank 0 writes TRAINING_STATE_FILE with the scheduler and the progress only.
TRAINING_SHARDS_DIR = "training_shards"


def _sharded_options(strict: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # the frozen base is the pre-trained one: never saved again, and not expected back
    return StateDictOptions(ignore_frozen_params=True, strict=strict)


def save_sharded_training_state(directory: Path, model: nn.Module, optimizer, scheduler, progress: Progress,
                                rank: int) -> None:
    """Every rank: its shard of the trainable tensors and optimizer state (one .distcp file per rank, metadata from
    rank 0); rank 0: the scheduler and progress."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_sharded_options())
    dcp.save({"model": model_state, "optimizer": optimizer_state},
             checkpoint_id=str(Path(directory) / TRAINING_SHARDS_DIR))
    if rank == 0:
        torch.save({"sharded": True, "scheduler": scheduler.state_dict(), "progress": asdict(progress)},
                   Path(directory) / TRAINING_STATE_FILE)


def is_sharded_state(state: dict[str, Any]) -> bool:
    return bool(state.get("sharded"))


def restore_sharded_training_state(directory: Path, state: dict[str, Any], model: nn.Module, optimizer,
                                   scheduler) -> None:
    """Every rank, after sharding the model and building its optimizer: read this rank's shards back."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_sharded_options())
    both = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(both, checkpoint_id=str(Path(directory) / TRAINING_SHARDS_DIR))
    result = set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optimizer"],
                            options=_sharded_options(strict=False))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if missing := sorted(trainable & set(result.missing_keys)):
        from peftsweep.trainers.faults import FatalTrialError  # a restart would only fail again

        raise FatalTrialError(f"the sharded checkpoint lacks trainable tensors: {missing[:3]}")
    scheduler.load_state_dict(state["scheduler"])


def check_same_strategy(state: dict[str, Any], sharded: bool) -> None:
    """A checkpoint is read back by the strategy that wrote it (DDP's holds whole tensors, FSDP's one shard a rank)."""
    if is_sharded_state(state) != sharded:
        from peftsweep.trainers.faults import FatalTrialError  # a restart would only fail again

        wrote, now = ("fsdp", "ddp") if is_sharded_state(state) else ("ddp", "fsdp")
        raise FatalTrialError(f"the checkpoint was written under resources.strategy {wrote} and this trial runs under "
                              f"{now}: run it with {wrote}, or start it afresh")
