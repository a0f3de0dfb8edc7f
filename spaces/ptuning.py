"""P-tuning: virtual tokens produced by a trainable MLP prompt encoder (Liu et al. 2021).

The encoder is only needed while training: the checkpoint stores the embeddings it produced, so the stored count
(`stored_params`) is smaller than the trained count.
"""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.params import IntParam
from peftsweep.spaces.peft_common import learning_rate, soft_prompt_method, virtual_tokens


def config(hparams: dict[str, Any], task_type: Any):
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType

    return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=hparams["num_virtual_tokens"],
                               encoder_hidden_size=hparams["encoder_hidden_size"],
                               encoder_reparameterization_type=PromptEncoderReparameterizationType.MLP)


SPEC = soft_prompt_method(
    "ptuning", "P-tuning: virtual tokens from a trainable MLP prompt encoder",
    {
        "num_virtual_tokens": virtual_tokens(),
        "encoder_hidden_size": IntParam(32, 512, 128, "hidden size of the MLP prompt encoder", log=True, min=1,
                                        size=True),
        # 3e-2 was still improving at the top of a textbook range on the demo task: reach higher.
        "lr": learning_rate(1e-3, 3e-1, 3e-2),
    },
    config,
)
