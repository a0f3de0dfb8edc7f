"""Load a pre-trained model (local directory or hub name), as the method asks (e.g. in 4 bits), and apply the method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftsweep.spaces import MethodSpec, ParamCounts, count_base_params, count_params, get_method
from peftsweep.errors import UserError
from peftsweep.trainers.bundled import BUNDLED_MODELS, resolve_bundled
from peftsweep.trainers.hub import cached_snapshot, hub_problem, not_found_message
from peftsweep.trainers.task_kind import TaskKind


def resolve_model(name_or_path: str) -> str:
    """A local directory, a bundled model's installed path (trainers.bundled), or else a hub id: its copy in the local
    hub cache, or the id itself when the hub answers (trainers.hub). UserError at once when it is none of these."""
    if name_or_path in BUNDLED_MODELS:
        return resolve_bundled(name_or_path) or name_or_path  # not installed: fall back to the hub
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_local and path.is_file():
        raise UserError(f"model: {name_or_path} is a file; a model is a directory (config.json, weights, tokenizer)")
    if looks_local and not path.is_dir():
        raise UserError(f"model: directory not found: {name_or_path}")
    if looks_local:
        return str(path)
    if (problem := hub_problem()) is None:
        return name_or_path
    if (snapshot := cached_snapshot(name_or_path)) is not None:
        return snapshot
    raise UserError(not_found_message(name_or_path, sorted(BUNDLED_MODELS), problem))


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def weights_problem(directory: Path) -> str | None:
    """What is wrong with a local model directory's weights, read without loading them: none at all, a shard index
    naming missing files, a safetensors file whose header does not parse or whose data is cut short, a .bin that
    is not a PyTorch checkpoint. (Else every trial would fail in its workers, after the sweep started.)"""
    import json
    import zipfile

    from safetensors import safe_open

    present = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        return (f"model: {directory} has no weights (looked for {', '.join(WEIGHT_FILES)}); a model directory is what "
                f"save_pretrained writes")
    first = present[0]
    files = [first]
    if first.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(first.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"model: {first} is not a shard index (a JSON object with a weight_map)"
        if missing := [name for name in shards if not (directory / name).is_file()]:
            return f"model: {first} names {len(missing)} shard(s) that are not there: {', '.join(missing[:3])}"
        files = [directory / name for name in shards]
    for file in files:
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt"):  # checks the header's offsets against the file's length
                    pass
            except Exception as exc:  # safetensors' own error type: a broken or cut-short file
                return f"model: {file} is not a readable safetensors file ({str(exc).splitlines()[0][:200]})"
        elif not zipfile.is_zipfile(file):
            return f"model: {file} is not a PyTorch checkpoint (torch.save writes a zip archive)"
    return None


def model_files_problem(name_or_path: str, tokenizer: Any, config: Any) -> str | None:
    """Once per sweep, before any data work: a local model directory's weights, then its tokenizer."""
    resolved = Path(resolve_model(name_or_path))
    return (weights_problem(resolved) if resolved.is_dir() else None) or tokenizer_problem(name_or_path, tokenizer,
                                                                                              config)


def tokenizer_problem(name_or_path: str, tokenizer: Any, config: Any) -> str | None:
    """A tokenizer much smaller than the model's vocabulary: its vocabulary files are missing (transformers then
    builds one of the special tokens alone, and every word becomes the unknown token) or belong to another model."""
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int) and vocab_size > 0 and len(tokenizer) < vocab_size / 2:
        return (f"model: {name_or_path}: its tokenizer has {len(tokenizer)} tokens for a model of {vocab_size}: its "
                f"vocabulary files (tokenizer.json, vocab.txt, ...) are missing or are not this model's")
    return None


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
              pad_token_id: int | None = None, task: TaskKind) -> nn.Module:
    """The pre-trained model with the task kind's head (a fresh classification head for these labels, or the
    pre-trained language-model head), loaded as the method asks (in 4 bits for QLoRA:
    `MethodSpec.base_quantization`)."""
    import transformers

    kind = task
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
                task: TaskKind) -> tuple[nn.Module, ParamCounts, MethodSpec]:
    """Load the base, count it, apply the method, count what trains and what a checkpoint stores."""
    spec = get_method(method)
    base = load_base(model, label_names, spec=spec, device=device, trust_remote_code=trust_remote_code,
                     pad_token_id=pad_token_id, task=task)
    base_params = count_base_params(base)
    adapted = spec.apply(base, hparams, task.name)
    return adapted, count_params(adapted, base_params, spec.stored_params(adapted)), spec


def build_skeleton(model: str, method: str, hparams: dict[str, Any], label_names: list[str], *,
                   trust_remote_code: bool = False, pad_token_id: int | None = None,
                   task: TaskKind) -> nn.Module:
    """The adapted model's structure with its base on PyTorch's meta device (nothing read, nothing allocated but the
    method's own small parts): what rank 0 of a sharded trial puts the gathered trained tensors into to write the
    method's files (trainers.checkpoint.load_trained). A quantized method is built as its unquantized form
    (`MethodSpec.unquantized`): its trained parts and files are the same."""
    import transformers

    from peftsweep.spaces import REGISTRY

    spec = get_method(method)
    spec = REGISTRY[spec.unquantized] if spec.quantized else spec
    kind = task
    config = load_model_config(model, trust_remote_code)
    config = config.__class__.from_dict(config.to_dict() | kind.head_kwargs(label_names))
    config._name_or_path = resolve_model(model)  # PEFT writes it into adapter_config.json as the base model
    if pad_token_id is not None and config.pad_token_id is None:
        config.pad_token_id = pad_token_id
    with torch.device("meta"):
        base = getattr(transformers, kind.model_class).from_config(config, trust_remote_code=trust_remote_code)
    return spec.apply(base, hparams, kind.name)
