"""IA3: learned rescaling vectors on keys, values and the feed-forward output (Liu et al. 2022)."""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.peft_common import learning_rate, peft_method


def config(hparams: dict[str, Any], task_type: Any):
    from peft import IA3Config

    return IA3Config(task_type=task_type)


SPEC = peft_method(
    "ia3", "IA3 rescaling vectors on keys, values and FFN outputs",
    # Measured best on the demo task: 3e-2; scaling vectors want far larger steps than weights.
    {"lr": learning_rate(1e-3, 3e-1, 3e-2)},
    config,
)
