"""What the PEFT-library methods share: adapter-only persistence, stored-size counting, prompt-length checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from peftsweep.spaces.base import ModelInfo
from peftsweep.spaces.params import FloatParam, IntParam


def peft_save(model: nn.Module, directory: Path) -> None:
    # PEFT writes adapter weights + adapter_config.json only: loadable with PeftModel.from_pretrained.
    model.save_pretrained(str(directory))


def peft_task_type(task: str) -> Any:
    """PEFT's task type for a task kind: it decides the wrapper (and so how prompts and generation are handled)."""
    from peft import TaskType

    return {"classification": TaskType.SEQ_CLS, "generation": TaskType.CAUSAL_LM}[task]


def peft_load(base: nn.Module, directory: Path, hparams: dict[str, Any], task: str) -> nn.Module:
    # Inference mode: prompt encoders come back as the plain embeddings they produced (their MLP is not stored).
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(directory), is_trainable=False)


def peft_stored_params(model: nn.Module) -> int:
    from peft import get_peft_model_state_dict

    return sum(t.numel() for t in get_peft_model_state_dict(model).values())


def learning_rate(low: float, high: float, default: float) -> FloatParam:
    return FloatParam(low, high, default, "peak AdamW learning rate", log=True, min=1e-8, max=10.0)


def virtual_tokens(default: int = 16) -> IntParam:
    return IntParam(4, 64, default, "number of virtual tokens", log=True, min=1, size=True)


def check_virtual_tokens(hparams: dict[str, Any], info: ModelInfo, extends_input: bool) -> list[str]:
    """Virtual tokens must stay shorter than the text they prefix; prompts prepended to the input need positions."""
    n = hparams["num_virtual_tokens"]
    problems = []
    if n >= info.max_length:
        problems.append(f"num_virtual_tokens: {n} must be smaller than data.max_length ({info.max_length})")
    if extends_input and info.max_position_embeddings and n + info.max_length > info.max_position_embeddings:
        problems.append(
            f"num_virtual_tokens: {n} + max_length {info.max_length} exceeds the model's "
            f"{info.max_position_embeddings} positions")
    return problems


def virtual_token_count(hparams: dict[str, Any]) -> int:
    """Tokens a soft prompt adds to every input sequence (`MethodSpec.added_tokens` of methods that prepend one)."""
    return int(hparams["num_virtual_tokens"])


def virtual_token_limit(info: ModelInfo, extends_input: bool) -> dict[str, float]:
    limit = info.max_length - 1
    if extends_input and info.max_position_embeddings:
        limit = min(limit, info.max_position_embeddings - info.max_length)
    return {"num_virtual_tokens": limit}
