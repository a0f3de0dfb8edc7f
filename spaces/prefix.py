"""Prefix tuning: trainable key/value prefixes in every attention layer (Li & Liang 2021).

With `prefix_projection` the prefixes come from an MLP (trained, then dropped: the checkpoint stores its output).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from peftsweep.spaces.base import MethodSpec
from peftsweep.spaces.params import ChoiceParam, Condition, IntParam
from peftsweep.spaces.peft_common import (check_virtual_tokens, learning_rate, peft_load, peft_save,
                                          peft_stored_params, peft_task_type, virtual_token_limit, virtual_tokens)


def apply(model: nn.Module, hparams: dict[str, Any], task: str) -> nn.Module:
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        task_type=peft_task_type(task),
        num_virtual_tokens=hparams["num_virtual_tokens"],
        prefix_projection=hparams["prefix_projection"],
        encoder_hidden_size=hparams.get("encoder_hidden_size", 0) or None,
    )
    return get_peft_model(model, config)


SPEC = MethodSpec(
    name="prefix",
    summary="prefix tuning: trainable key/value prefixes in every layer",
    params={
        "num_virtual_tokens": virtual_tokens(),
        "prefix_projection": ChoiceParam((False, True), False, "reparameterise the prefixes through an MLP",
                                         size=True),
        "encoder_hidden_size": IntParam(32, 512, 128, "hidden size of the prefix MLP", log=True, min=1, size=True,
                                        when=Condition("prefix_projection", True)),
        "lr": learning_rate(1e-3, 3e-1, 1e-1),
    },
    apply=apply,
    save=peft_save,
    load=peft_load,
    stored_params=peft_stored_params,
    # Prefixes live in the attention cache, not in the input, so they need no extra positions.
    check_context=partial(check_virtual_tokens, extends_input=False),
    upper_limits=partial(virtual_token_limit, extends_input=False),
)
