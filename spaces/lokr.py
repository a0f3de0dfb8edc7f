"""LoKr: low-rank Kronecker-product updates on the attention projections (LyCORIS; Yeh et al. 2024).

Each adapted weight gets dW = W1 (x) W2, the Kronecker product of a small full matrix W1 and a matrix W2 that is
itself low-rank (rank r) when r is small against W2's sides, full otherwise. The factors' sides come from factoring
the weight's dimensions (as near to square roots as they go).
"""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.loha import LYCORIS_PARAMS
from peftsweep.spaces.params import IntParam
from peftsweep.spaces.peft_common import peft_method


def config(hparams: dict[str, Any], task_type: Any):
    from peft import LoKrConfig

    return LoKrConfig(task_type=task_type, r=hparams["r"], alpha=hparams["alpha_multiple"] * hparams["r"],
                      module_dropout=hparams["module_dropout"])


SPEC = peft_method(
    "lokr", "LoKr: low-rank Kronecker-product updates on the attention projections (LyCORIS)",
    {"r": IntParam(2, 32, 8, "rank of the second Kronecker factor (full when r is large against its sides)", log=True,
                   min=1, size=True), **LYCORIS_PARAMS},
    config,
)
