"""The mechanics of one worker's training, whatever the task kind: seeds, optimizer, one epoch, mixed precision."""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from peftsweep.trainers.config import TrainSettings
from peftsweep.trainers.faults import NonFiniteLossError
from peftsweep.trainers.sharding import local_value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def begin_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Seed dropout and data order from (seed, epoch): a trial continued from a checkpoint trains exactly like one
    that never stopped."""
    seed_everything(seed + epoch)
    if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler (more than one worker)
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.batch_sampler, "set_epoch"):  # LengthGroupedBatches (train.group_by_length)
        loader.batch_sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)  # RandomSampler (one worker)
    if generator is not None:
        generator.manual_seed(seed + epoch)


def optimizer_for(model: nn.Module, lr: float, settings: TrainSettings, total_steps: int,
                  fused: bool | None = None):
    """AdamW with decay on matrices only, linear warm-up then linear decay to zero. `fused` (default: when every
    trainable parameter is on a GPU) updates all parameters in one kernel instead of a handful per tensor list."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": settings.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    if fused is None:
        fused = bool(trainable) and all(p.is_cuda for p in trainable)
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)
    warmup = math.ceil(settings.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def computes_in_bf16(precision: str, gpu_with_bf16: bool) -> bool:
    """Whether `train.precision` means bf16 compute (and lean frozen weights): bf16, or auto on a GPU that has it."""
    return precision == "bf16" or (precision == "auto" and gpu_with_bf16)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """`computes_in_bf16` on this device."""
    return computes_in_bf16(precision, device.type == "cuda" and torch.cuda.is_bf16_supported())


def autocast(device: torch.device, precision: str):
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass(frozen=True)
class EpochStats:
    """What one worker's pass over its batches gave."""

    loss: float  # mean training loss of its steps
    examples: int  # examples it trained on
    tokens: int  # tokens it trained on (attention mask: padding not counted)


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel() if "input_ids" in batch else 0


def train_epoch(model: nn.Module, batches: Iterator[dict[str, torch.Tensor]], optimizer, scheduler,
                settings: TrainSettings, device: torch.device, max_steps: int | None = None,
                after_first_step: Callable[[], None] | None = None) -> EpochStats:
    """One pass (or `max_steps` steps). `after_first_step` is called once the first optimizer step is done."""
    model.train()
    total_loss, steps, seen, tokens = 0.0, 0, 0, 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    for batch in batches:
        batch = to_device(batch, device)
        with autocast(device, settings.precision):
            loss = model(**batch).loss
        loss.backward()
        norm = local_value(torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm))  # FSDP: a DTensor
        # Checked on the gradient norm, after DDP has averaged the gradients: one rank's NaN reaches every rank,
        # so all of them stop at the same step (a check on the local loss alone would leave the others waiting).
        if not (torch.isfinite(norm) and torch.isfinite(loss)):
            raise NonFiniteLossError(f"loss is {loss.item():.4g}, gradient norm {norm.item():.4g} at step {steps}")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total_loss += loss.item()
        steps += 1
        seen += len(batch["labels"])
        tokens += _tokens(batch)
        if steps == 1 and after_first_step is not None:
            after_first_step()
        if max_steps is not None and steps >= max_steps:
            break
    return EpochStats(total_loss / max(1, steps), seen, tokens)
