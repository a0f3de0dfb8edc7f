"""Load a pre-trained model (local directory or hub name), as the method asks (e.g. in 4 bits), and apply the method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftsweep.spaces import MethodSpec, ParamCounts, count_base_params, count_params, get_method
from peftsweep.errors import UserError
from peftsweep.trainers.bundled import BUNDLED_MODELS, resolve_bundled

def resolve_model(name_or_path: str) -> str:
    """A local directory, a bundled model's installed path (trainers.bundled), or else the name itself (a hub id)."""
    if name_or_path in BUNDLED_MODELS:
        return resolve_bundled(name_or_path) or name_or_path  # not installed: fall back to the hub
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_local and not path.is_dir():
        raise UserError(f"model: directory not found: {name_or_path}")
    return str(path) if looks_local else name_or_path


def load_model_config(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_model(name_or_path), trust_remote_code=trust_remote_code)
    except UserError:
        raise
    except Exception as exc:  # offline hub, unknown name, broken directory
        raise UserError(f"model: cannot load {name_or_path!r}: {str(exc).splitlines()[0]}") from exc


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name_or_path), trust_remote_code=trust_remote_code)


def load_base(name_or_path: str, label_names: list[str], *, spec: MethodSpec | None = None,
              device: torch.device | None = None, trust_remote_code: bool = False,
              pad_token_id: int | None = None, task: str = "classification") -> nn.Module:
    """The pre-trained model with the task kind's head (a fresh classification head for these labels, or the
    pre-trained language-model head), loaded as the method asks (in 4 bits for QLoRA:
    `MethodSpec.base_quantization`)."""
    import transformers

    from peftsweep.trainers.tasks import get_task

    kind = get_task(task)
    device = device or torch.device("cpu")
    kwargs: dict[str, Any] = kind.head_kwargs(label_names) | {"trust_remote_code": trust_remote_code}
    quantized = spec is not None and spec.base_quantization is not None
    if quantized:
        if missing := spec.missing_requirements():
            raise RuntimeError("; ".join(missing))
        compute = torch.bfloat16 if device.type == "cuda" else torch.float32
        kwargs |= {"quantization_config": spec.base_quantization(compute), "device_map": {"": str(device)}}
    model = getattr(transformers, kind.model_class).from_pretrained(resolve_model(name_or_path), **kwargs)
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id  # decoders pool on the last non-pad token
    return model if quantized else model.to(device)


def build_model(model: str, method: str, hparams: dict[str, Any], label_names: list[str], *,
                device: torch.device | None = None, trust_remote_code: bool = False,
                pad_token_id: int | None = None,
                task: str = "classification") -> tuple[nn.Module, ParamCounts, MethodSpec]:
    """Load the base, count it, apply the method, count what trains and what a checkpoint stores."""
    spec = get_method(method)
    base = load_base(model, label_names, spec=spec, device=device, trust_remote_code=trust_remote_code,
                     pad_token_id=pad_token_id, task=task)
    base_params = count_base_params(base)
    adapted = spec.apply(base, hparams, task)
    return adapted, count_params(adapted, base_params, spec.stored_params(adapted)), spec
