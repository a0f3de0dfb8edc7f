"""Full fine-tuning: every weight trains. The reference every PEFT method is compared against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from peftsweep.spaces.accounting import logical_numel
from peftsweep.spaces.base import MethodSpec, TaskName
from peftsweep.spaces.peft_common import learning_rate

WEIGHTS_FILE = "model.safetensors"


def apply(model: nn.Module, hparams: dict[str, Any], task: TaskName) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save(model: nn.Module, directory: Path) -> None:
    save_model(model, str(directory / WEIGHTS_FILE))  # handles tied weights; every tensor, since all changed


def load(base: nn.Module, directory: Path, hparams: dict[str, Any], task: TaskName) -> nn.Module:
    load_model(base, str(directory / WEIGHTS_FILE))
    return base


def stored_params(model: nn.Module) -> int:
    return sum(logical_numel(p) for p in model.parameters())


SPEC = MethodSpec(
    name="full",
    summary="full fine-tuning of every weight (the reference)",
    params={"lr": learning_rate(1e-5, 1e-3, 2e-4)},
    apply=apply,
    save=save,
    load=load,
    stored_params=stored_params,
    reference=True,
    stores_every_weight=True,
    flop_factor=6,
)
