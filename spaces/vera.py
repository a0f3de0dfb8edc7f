"""VeRA: vector-based random matrix adaptation (Kopiczko et al. 2024). One pair of frozen random low-rank matrices is
shared by every adapted layer; each layer trains two scaling vectors only (r values and one per output feature), so
its size barely grows with the rank. The checkpoint also keeps the shared matrices (PEFT's `save_projection`), so a
model loads without regenerating them: more is stored than trained."""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.params import FloatParam, IntParam
from peftsweep.spaces.peft_common import learning_rate, peft_method


def config(hparams: dict[str, Any], task_type: Any):
    from peft import VeraConfig

    return VeraConfig(task_type=task_type, r=hparams["r"], vera_dropout=hparams["dropout"])


SPEC = peft_method(
    "vera", "VeRA: per-layer scaling vectors around shared frozen random low-rank matrices",
    {
        "r": IntParam(16, 512, 256, "rank of the shared random matrices", log=True, min=1, size=True),
        "dropout": FloatParam(0.0, 0.2, 0.0, "dropout on the VeRA input", min=0.0, max=0.9),
        # scaling vectors, like IA3's, want large steps (the VeRA paper: 1e-2 and above)
        "lr": learning_rate(1e-3, 1e-1, 1e-2),
    },
    config,
)
