"""Prompt tuning: trainable soft-prompt embeddings prepended to the input (Lester et al. 2021)."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from peftsweep.spaces.base import MethodSpec
from peftsweep.spaces.peft_common import (check_virtual_tokens, learning_rate, peft_load, peft_save,
                                          peft_stored_params, peft_task_type, virtual_token_count,
                                          virtual_token_limit, virtual_tokens)


def apply(model: nn.Module, hparams: dict[str, Any], task: str) -> nn.Module:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    config = PromptTuningConfig(
        task_type=peft_task_type(task),
        num_virtual_tokens=hparams["num_virtual_tokens"],
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )
    return get_peft_model(model, config)


SPEC = MethodSpec(
    name="prompt",
    summary="prompt tuning: soft-prompt embeddings prepended to the input",
    # Soft prompts need very large steps: 3e-1 was the best measured LR on the demo task.
    params={"num_virtual_tokens": virtual_tokens(), "lr": learning_rate(1e-2, 1.0, 3e-1)},
    apply=apply,
    save=peft_save,
    load=peft_load,
    stored_params=peft_stored_params,
    check_context=partial(check_virtual_tokens, extends_input=True),
    upper_limits=partial(virtual_token_limit, extends_input=True),
    added_tokens=virtual_token_count,
)
