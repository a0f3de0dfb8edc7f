"""Prompt tuning: trainable soft-prompt embeddings prepended to the input (Lester et al. 2021)."""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.peft_common import learning_rate, soft_prompt_method, virtual_tokens


def config(hparams: dict[str, Any], task_type: Any):
    from peft import PromptTuningConfig, PromptTuningInit

    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=hparams["num_virtual_tokens"],
                              prompt_tuning_init=PromptTuningInit.RANDOM)


SPEC = soft_prompt_method(
    "prompt", "prompt tuning: soft-prompt embeddings prepended to the input",
    # Soft prompts need very large steps: 3e-1 was the best measured LR on the demo task.
    {"num_virtual_tokens": virtual_tokens(), "lr": learning_rate(1e-2, 1.0, 3e-1)},
    config,
)
