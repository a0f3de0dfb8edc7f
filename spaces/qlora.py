"""QLoRA: LoRA on a base whose linear layers are NF4-quantized by bitsandbytes (Dettmers et al. 2023).

The trainer loads the base in 4 bits (`base_quantization`: `quantization_config`); `apply` adds LoRA on top. Works on CPU with
bitsandbytes >= 0.49 as well as on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from peftsweep.spaces.base import Requirement, TaskName
from peftsweep.spaces.lora import LORA_PARAMS, lora_config
from peftsweep.spaces.lora import SPEC as LORA_SPEC
from peftsweep.spaces.peft_common import learning_rate, peft_load, peft_method, peft_task_type

BITSANDBYTES = Requirement("bitsandbytes", "QLoRA needs bitsandbytes: pip install 'peftsweep[qlora]' (or pip install "
                                           "bitsandbytes)")


def require_bitsandbytes() -> Any:
    if (problem := BITSANDBYTES.problem()) is not None:
        raise RuntimeError(problem)
    import bitsandbytes

    return bitsandbytes


def quantization_config(compute_dtype: Any) -> Any:
    """4-bit NF4 for the body; a new classification head and a causal LM's output layer (often tied to the input
    embeddings) stay in full precision (PEFT cannot wrap a 4-bit head)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=["classifier", "score", "pre_classifier", "lm_head"],
    )


def four_bit_layers(model: nn.Module) -> list[nn.Module]:
    bnb = require_bitsandbytes()
    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def avoid_packed_cpu_weights(model: nn.Module) -> nn.Module:
    """bitsandbytes 0.50 on CPU: after an eval pass a 4-bit layer keeps a packed inference-only weight, and the next
    training step then fails with an in-place error on a leaf (the packing also fails on layers narrower than one
    64-value block). Opting out of that path avoids both."""
    layers = four_bit_layers(model)
    if not layers:
        raise ValueError("qlora: the base model has no 4-bit layers; load it with quantization_config() first")
    for layer in layers:
        if hasattr(layer, "support_avx512bf16_for_cpu"):
            layer.support_avx512bf16_for_cpu = False
    return model


def apply(model: nn.Module, hparams: dict[str, Any], task: TaskName) -> nn.Module:
    from peft import get_peft_model, prepare_model_for_kbit_training

    avoid_packed_cpu_weights(model)
    # Gradient checkpointing trades compute for memory; small classifiers don't need it and run ~30% faster without.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(hparams, peft_task_type(task)))


def load(base: nn.Module, directory: Path, hparams: dict[str, Any], task: TaskName) -> nn.Module:
    return peft_load(avoid_packed_cpu_weights(base), directory, hparams, task)


SPEC = peft_method(
    "qlora", "LoRA on a 4-bit NF4-quantized base (bitsandbytes)",
    {**LORA_PARAMS, "lr": learning_rate(1e-4, 3e-2, 5e-3)},
    lora_config,
    # the base is prepared for 4-bit training before PEFT wraps it, and loaded so again
    apply=apply, load=load, base_quantization=quantization_config, requires=(BITSANDBYTES,),
    unquantized=LORA_SPEC.name,
)
