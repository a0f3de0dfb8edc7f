"""IA3: learned rescaling vectors on keys, values and the feed-forward output (Liu et al. 2022)."""

from __future__ import annotations

from typing import Any

from torch import nn

from peftsweep.spaces.base import MethodSpec
from peftsweep.spaces.peft_common import (learning_rate, peft_load, peft_save, peft_stored_params,
                                          peft_task_type)


def apply(model: nn.Module, hparams: dict[str, Any], task: str) -> nn.Module:
    from peft import IA3Config, get_peft_model

    return get_peft_model(model, IA3Config(task_type=peft_task_type(task)))


SPEC = MethodSpec(
    name="ia3",
    summary="IA3 rescaling vectors on keys, values and FFN outputs",
    # Measured best on the demo task: 3e-2; scaling vectors want far larger steps than weights.
    params={"lr": learning_rate(1e-3, 3e-1, 3e-2)},
    apply=apply,
    save=peft_save,
    load=peft_load,
    stored_params=peft_stored_params,
)
