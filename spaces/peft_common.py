"""What the PEFT-library methods share: one constructor for a method that Hugging Face PEFT implements (its config from
the hyperparameters is all it adds), adapter-only persistence, stored-size counting, the soft prompts' length checks.

A new PEFT method is its config function and its parameters:

    def config(hparams, task_type):
        from peft import VeraConfig
        return VeraConfig(task_type=task_type, r=hparams["r"])

    SPEC = peft_method("vera", "VeRA: ...", {"r": IntParam(...), "lr": learning_rate(...)}, config)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from torch import nn

from peftsweep.spaces.base import MethodSpec, ModelInfo, TaskName
from peftsweep.spaces.params import FloatParam, IntParam, Param

PeftConfigFn = Callable[[dict[str, Any], Any], Any]  # (hyperparameters, PEFT's task type) -> a PEFT config


def peft_method(name: str, summary: str, params: dict[str, Param], config: PeftConfigFn, **spec: Any) -> MethodSpec:
    """A method that PEFT applies (`get_peft_model` with `config`), saves (the adapter alone), loads and counts;
    `spec`: any other `MethodSpec` field (requirements, a prompt's checks, an `apply` or `load` of its own)."""
    fields = dict(apply=partial(peft_apply, config), save=peft_save, load=peft_load,
                  stored_params=peft_stored_params) | spec
    return MethodSpec(name=name, summary=summary, params=params, **fields)


def soft_prompt_method(name: str, summary: str, params: dict[str, Param], config: PeftConfigFn,
                       extends_input: bool = True) -> MethodSpec:
    """A PEFT method of virtual tokens: prepended to the input (`extends_input`: they take positions of their own and
    lengthen every sequence) or kept in the attention cache (prefix tuning)."""
    extra = {"added_tokens": virtual_token_count} if extends_input else {}
    return peft_method(name, summary, params, config,
                       check_context=partial(check_virtual_tokens, extends_input=extends_input),
                       upper_limits=partial(virtual_token_limit, extends_input=extends_input), **extra)


def peft_apply(config: PeftConfigFn, model: nn.Module, hparams: dict[str, Any], task: TaskName) -> nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, config(hparams, peft_task_type(task)))


def peft_save(model: nn.Module, directory: Path) -> None:
    # PEFT writes adapter weights + adapter_config.json only: loadable with PeftModel.from_pretrained.
    model.save_pretrained(str(directory))


def peft_task_type(task: TaskName) -> Any:
    """PEFT's task type for a task kind: it decides the wrapper (and so how prompts and generation are handled)."""
    from peft import TaskType

    return {TaskName.CLASSIFICATION: TaskType.SEQ_CLS, TaskName.GENERATION: TaskType.CAUSAL_LM}[TaskName(task)]


def peft_load(base: nn.Module, directory: Path, hparams: dict[str, Any], task: TaskName) -> nn.Module:
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
