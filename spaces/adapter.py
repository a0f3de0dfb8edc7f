"""Houlsby-style bottleneck adapters after each attention output and each feed-forward output (Houlsby et al. 2019).

PEFT has no bottleneck adapter and the `adapters` package does not support transformers 5, so this is our own small
module: `y = x + up(gelu(down(x)))` inserted after the sublayer's output projection, before the residual add and
LayerNorm. `up` starts at zero, so the adapted model starts as the pre-trained one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peftsweep.spaces.base import MethodSpec, TaskName, freeze_all, unfreeze_head
from peftsweep.spaces.params import IntParam
from peftsweep.spaces.peft_common import learning_rate

WEIGHTS_FILE = "adapter.safetensors"

# Output projections of the attention and feed-forward sublayers, by architecture family.
TARGET_PATTERNS = (
    r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$",  # BERT, RoBERTa, ELECTRA, MiniLM, ...
    r"\.attention\.out_lin$", r"\.ffn\.lin2$",  # DistilBERT
    r"\.self_attn\.o_proj$", r"\.mlp\.down_proj$",  # Llama, Mistral, Qwen, SmolLM, ...
)


class Bottleneck(nn.Module):
    def __init__(self, hidden_size: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


class AdaptedProjection(nn.Module):
    """A frozen output projection followed by a trainable bottleneck adapter."""

    def __init__(self, projection: nn.Linear, bottleneck: int):
        super().__init__()
        self.projection = projection
        self.adapter = Bottleneck(projection.out_features, bottleneck).to(projection.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.projection(x))


def target_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and any(re.search(p, name) for p in TARGET_PATTERNS)]


def apply(model: nn.Module, hparams: dict[str, Any], task: TaskName) -> nn.Module:
    names = target_names(model)
    if not names:
        raise ValueError(f"adapter: no attention/feed-forward output projections found in a "
                         f"{type(model).__name__}; known patterns: {TARGET_PATTERNS}")
    freeze_all(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, AdaptedProjection(getattr(parent, child), hparams["bottleneck"]))
    unfreeze_head(model)
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save(model: nn.Module, directory: Path) -> None:
    save_file(trainable_state(model), str(directory / WEIGHTS_FILE))


def load(base: nn.Module, directory: Path, hparams: dict[str, Any], task: TaskName) -> nn.Module:
    model = apply(base, hparams, task)
    state = load_file(str(directory / WEIGHTS_FILE))
    missing = set(trainable_state(model)) - set(state)
    result = model.load_state_dict(state, strict=False)
    if missing or result.unexpected_keys:
        raise ValueError(f"adapter checkpoint does not match the model: missing {sorted(missing)}, "
                         f"unexpected {result.unexpected_keys}")
    return model


def stored_params(model: nn.Module) -> int:
    return sum(t.numel() for t in trainable_state(model).values())


SPEC = MethodSpec(
    name="adapter",
    summary="Houlsby bottleneck adapters after attention and FFN outputs (our own module)",
    params={
        "bottleneck": IntParam(8, 256, 32, "adapter bottleneck size", log=True, min=1, size=True),
        # 1e-2 was best on the demo task; 3e-2 diverged.
        "lr": learning_rate(1e-4, 3e-2, 1e-2),
    },
    apply=apply,
    save=save,
    load=load,
    stored_params=stored_params,
)
