"""LoHa: a low-rank Hadamard-product update on the attention projections (Hyeon-Woo et al. 2022, FedPara; LyCORIS).

Each adapted weight gets dW = (A1 B1) * (A2 B2), the element-wise product of two rank-r products: rank up to r^2
for the parameters of two rank-r LoRA updates. PEFT's default targets for the model type (query and value on BERT,
q_proj and v_proj on Llama), as for LoRA.
"""

from __future__ import annotations

from typing import Any

from peftsweep.spaces.params import FloatParam, IntParam
from peftsweep.spaces.peft_common import learning_rate, peft_method


def config(hparams: dict[str, Any], task_type: Any):
    from peft import LoHaConfig

    return LoHaConfig(task_type=task_type, r=hparams["r"], alpha=hparams["alpha_multiple"] * hparams["r"],
                      module_dropout=hparams["module_dropout"])


# What the LyCORIS methods (LoHa, LoKr) share besides their rank: the update's scale, module dropout, learning rate.
LYCORIS_PARAMS = {
    "alpha_multiple": FloatParam(0.5, 4.0, 1.0, "alpha = alpha_multiple * r (the update is scaled by alpha/r)",
                                 log=True, min=0.01, max=100.0),
    "module_dropout": FloatParam(0.0, 0.2, 0.0, "probability of dropping a module's update in a step", min=0.0,
                                 max=0.9),
    "lr": learning_rate(1e-4, 3e-2, 5e-3),
}

SPEC = peft_method(
    "loha", "LoHa: low-rank Hadamard-product updates on the attention projections (LyCORIS)",
    {"r": IntParam(2, 32, 8, "rank of each of the two factors (the update's rank is up to r^2)", log=True, min=1,
                   size=True), **LYCORIS_PARAMS},
    config,
)
