"""LoRA: trainable low-rank updates to the attention projections (PEFT's default targets for the model type)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsweep.spaces.params import ChoiceParam, FloatParam, IntParam
from peftsweep.spaces.peft_common import learning_rate, peft_method

if TYPE_CHECKING:
    from peft import LoraConfig

LORA_PARAMS = {
    "r": IntParam(2, 64, 8, "rank of the low-rank update", log=True, min=1, size=True),
    "alpha_multiple": ChoiceParam((0.5, 1, 2, 4), 2, "lora_alpha = alpha_multiple * r"),
    "dropout": FloatParam(0.0, 0.2, 0.05, "dropout on the LoRA input", min=0.0, max=0.9),
    "targets": ChoiceParam(("attention", "all_linear"), "attention",
                           "attention: PEFT's default projections for the model type (query/value, q_proj/v_proj); "
                           "all_linear: every linear layer of the body", size=True),
}


def lora_config(hparams: dict[str, Any], task_type: Any) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=hparams["r"],
        lora_alpha=hparams["alpha_multiple"] * hparams["r"],
        lora_dropout=hparams["dropout"],
        target_modules="all-linear" if hparams["targets"] == "all_linear" else None,
    )


SPEC = peft_method("lora", "LoRA low-rank updates on the attention projections (Hu et al. 2021)",
                   {**LORA_PARAMS, "lr": learning_rate(1e-4, 3e-2, 1e-2)}, lora_config)
