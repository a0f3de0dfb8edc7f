"""Parameter accounting with one fixed denominator for every method.

PEFT's own "all params" differs by method (prompt encoders, a copied classifier head), and a 4-bit weight stores two
values per byte, so neither `numel()` sums nor PEFT's printout compare across methods. Here:

- base_params: the pre-trained body's own parameters (task head excluded), counted as logical values;
  the same number for every method on a given model, 4-bit or not.
- trainable_params: everything the optimizer updates, reparameterisation MLPs and the task head included.
- head_params: the part of trainable_params that is the task head (new for every method, full fine-tune too).
- stored_params: what the checkpoint keeps and inference needs (prefix/P-tuning drop their MLP after training).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from peftsweep.spaces.base import HEAD_MODULE_NAMES

from peftsweep.metric_names import STORED_PCT, TRAINABLE_PCT


@dataclass(frozen=True)
class ParamCounts:
    trainable_params: int
    stored_params: int
    head_params: int
    base_params: int

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable_params / self.base_params

    @property
    def stored_pct(self) -> float:
        return 100.0 * self.stored_params / self.base_params

    def as_metrics(self) -> dict[str, float]:
        return {**asdict(self), TRAINABLE_PCT: self.trainable_pct, STORED_PCT: self.stored_pct}


def logical_numel(param: nn.Parameter) -> int:
    """Values a parameter represents: a bitsandbytes Params4bit packs two 4-bit values per uint8 element."""
    quant_state = getattr(param, "quant_state", None)
    shape = getattr(quant_state, "shape", None)
    if shape is not None:
        return math.prod(shape)
    return param.numel()


def is_head(param_name: str) -> bool:
    return any(part in HEAD_MODULE_NAMES for part in param_name.split("."))


def count_base_params(model: nn.Module) -> int:
    """The pre-trained body of an unadapted model (head excluded); call before applying a method."""
    return sum(logical_numel(p) for name, p in model.named_parameters() if not is_head(name))


def count_params(model: nn.Module, base_params: int, stored_params: int) -> ParamCounts:
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return ParamCounts(
        trainable_params=sum(logical_numel(p) for _, p in trainable),
        stored_params=stored_params,
        head_params=sum(logical_numel(p) for name, p in trainable if is_head(name)),
        base_params=base_params,
    )
