"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024). Each adapted weight is split into a magnitude (one
trainable scale per output feature) and a direction, updated by LoRA: LoRA's parameters plus one vector per layer."""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.lora import LORA_PARAMS, lora_config
from peftsweep.spaces.peft_common import learning_rate, peft_method


def config(hparams: dict[str, Any], task_type: Any):
    settings = lora_config(hparams, task_type)
    settings.use_dora = True
    return settings


SPEC = peft_method("dora", "DoRA: LoRA's update on the direction of each weight, with a trainable magnitude",
                   {**LORA_PARAMS, "lr": learning_rate(1e-4, 3e-2, 1e-2)}, config)
