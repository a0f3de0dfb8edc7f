"""P-tuning: virtual tokens produced by a trainable MLP prompt encoder (Liu et al. 2021).

The encoder is only needed while training: the checkpoint stores the embeddings it produced, so the stored count
(`stored_params`) is smaller than the trained count.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from peftsweep.spaces.base import MethodSpec
from peftsweep.spaces.params import IntParam
from peftsweep.spaces.peft_common import (check_virtual_tokens, learning_rate, peft_load, peft_save,
                                          peft_stored_params, peft_task_type, virtual_token_count,
                                          virtual_token_limit, virtual_tokens)


def apply(model: nn.Module, hparams: dict[str, Any], task: str) -> nn.Module:
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, get_peft_model

    config = PromptEncoderConfig(
        task_type=peft_task_type(task),
        num_virtual_tokens=hparams["num_virtual_tokens"],
        encoder_hidden_size=hparams["encoder_hidden_size"],
        encoder_reparameterization_type=PromptEncoderReparameterizationType.MLP,
    )
    return get_peft_model(model, config)


SPEC = MethodSpec(
    name="ptuning",
    summary="P-tuning: virtual tokens from a trainable MLP prompt encoder",
    params={
        "num_virtual_tokens": virtual_tokens(),
        "encoder_hidden_size": IntParam(32, 512, 128, "hidden size of the MLP prompt encoder", log=True, min=1,
                                        size=True),
        # 3e-2 was still improving at the top of a textbook range on the demo task: reach higher.
        "lr": learning_rate(1e-3, 3e-1, 3e-2),
    },
    apply=apply,
    save=peft_save,
    load=peft_load,
    stored_params=peft_stored_params,
    check_context=partial(check_virtual_tokens, extends_input=True),
    upper_limits=partial(virtual_token_limit, extends_input=True),
    added_tokens=virtual_token_count,
)
