"""Prefix tuning: trainable key/value prefixes in every attention layer (Li & Liang 2021).

With `prefix_projection` the prefixes come from an MLP (trained, then dropped: the checkpoint stores its output).
Prefixes live in the attention cache, not in the input, so they need no positions of their own.
"""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.params import ChoiceParam, Condition, IntParam
from peftsweep.spaces.peft_common import learning_rate, soft_prompt_method, virtual_tokens


def config(hparams: dict[str, Any], task_type: Any):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=hparams["num_virtual_tokens"],
                              prefix_projection=hparams["prefix_projection"],
                              encoder_hidden_size=hparams.get("encoder_hidden_size", 0) or None)


SPEC = soft_prompt_method(
    "prefix", "prefix tuning: trainable key/value prefixes in every layer",
    {
        "num_virtual_tokens": virtual_tokens(),
        "prefix_projection": ChoiceParam((False, True), False, "reparameterise the prefixes through an MLP",
                                         size=True),
        "encoder_hidden_size": IntParam(32, 512, 128, "hidden size of the prefix MLP", log=True, min=1, size=True,
                                        when=Condition("prefix_projection", True)),
        "lr": learning_rate(1e-3, 3e-1, 1e-1),
    },
    config, extends_input=False,
)
