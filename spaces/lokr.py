"""LoKr: low-rank Kronecker-product updates on the attention projections (LyCORIS; Yeh et al. 2024).

Each adapted weight gets dW = W1 (x) W2, the Kronecker product of a small full matrix W1 and a matrix W2 that is
itself low-rank (rank r) when r is small against W2's sides, full otherwise. The factors' sides come from factoring
the weight's dimensions (as near to square roots as they go).
"""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.params import FloatParam, IntParam
from peftsweep.spaces.peft_common import learning_rate, peft_method


def config(hparams: dict[str, Any], task_type: Any):
    from peft import LoKrConfig

    return LoKrConfig(task_type=task_type, r=hparams["r"], alpha=hparams["alpha_multiple"] * hparams["r"],
                      module_dropout=hparams["module_dropout"])


SPEC = peft_method(
    "lokr", "LoKr: low-rank Kronecker-product updates on the attention projections (LyCORIS)",
    {
        "r": IntParam(2, 32, 8, "rank of the second Kronecker factor (full when r is large against its sides)",
                      log=True, min=1, size=True),
        "alpha_multiple": FloatParam(0.5, 4.0, 1.0, "alpha = alpha_multiple * r (the update is scaled by alpha/r)",
                                     log=True, min=0.01, max=100.0),
        "module_dropout": FloatParam(0.0, 0.2, 0.0, "probability of dropping a module's update in a step", min=0.0,
                                     max=0.9),
        "lr": learning_rate(1e-4, 3e-2, 5e-3),
    },
    config,
)
