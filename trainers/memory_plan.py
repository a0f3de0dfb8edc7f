"""The memory plan: what one worker of a trial holds, estimated before anything starts.

Pure arithmetic on parameter counts and the model's shape; `count_parameters` gets the counts exactly by building the
adapted model on PyTorch's meta device (no weights read, nothing allocated), so that an 8B decoder is planned in
seconds on a laptop. The rules (bytes per parameter; docs/scale.md explains them):

- Parameters. Trainable ones are fp32 (master weights, as PEFT keeps adapters and as full fine-tuning needs for AdamW
  to make progress in small steps). Frozen ones are bf16 under lean weights (`train.precision: auto` on a GPU, or
  `bf16`), else fp32. QLoRA's quantized base is NF4: half a byte per weight plus a 4-byte scale per 64 weights.
- Gradients: fp32, one per trainable parameter. DDP also keeps its reduction buckets, another fp32 copy.
- Optimizer: AdamW's two moments, fp32: 8 bytes per trainable parameter.
- FSDP divides parameters, gradients and optimizer state by the number of workers (all but a 4-bit base, which
  each worker keeps whole: trainers.sharding), and then needs a working set in
  the compute dtype: the root's own parameters (embeddings, output layer, final norm: gathered for the whole step)
  and two transformer blocks at a time (the one computing and the next being gathered). With CPU offload the sharded
  state lives in host memory and the device holds the working set and the activations only.
- Activations, kept for the backward pass (no activation checkpointing): per layer and token about 8 x hidden + 4 x
  intermediate values in the compute dtype (the block's inputs, attention projections and output, the MLP's four
  intermediate tensors), plus a causal LM's logits in fp32 twice (the logits and their gradient).
- A fixed allowance per device for the CUDA context and the allocator's fragmentation (OVERHEAD_BYTES).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the plan runs before any model is built: torch is imported where a count needs it
    from peftsweep.trainers.task_kind import TaskKind

GIB = 2**30
FP32, BF16 = 4, 2
NF4_BYTES = 0.5 + 4 / 64  # 4-bit weights and one fp32 absmax per block of 64
ADAMW_STATE_BYTES = 2 * FP32
OVERHEAD_BYTES = 1.5 * GIB  # CUDA context (~0.5 GiB) and allocator fragmentation
STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class ParameterCounts:
    """A method applied to a model: how many parameters of each kind it holds."""

    trainable: int
    frozen: int  # not trained, stored in full or half precision
    quantized: int = 0  # not trained, stored in 4 bits (QLoRA's base linear weights)
    root: int = 0  # outside the transformer blocks (embeddings, output layer, final norm, a classification head)
    largest_block: int = 0  # the largest transformer block's parameters (all kinds)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen + self.quantized


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        hidden = int(config.hidden_size)
        return cls(hidden, int(config.num_hidden_layers), int(getattr(config, "intermediate_size", 0) or 4 * hidden),
                   int(config.vocab_size))


@dataclass(frozen=True)
class Workload:
    """What one worker computes per step."""

    batch_per_worker: int
    sequence_length: int
    causal_lm: bool  # generation: the logits over the vocabulary are kept for the loss
    lean: bool  # frozen weights and compute in bf16 (False: everything fp32)


@dataclass(frozen=True)
class WorkerPlan:
    """Bytes one worker needs, by part; `device` is what must fit on its accelerator."""

    strategy: str
    workers: int
    cpu_offload: bool
    parts: dict[str, float] = field(default_factory=dict)  # on the device: weights, gradients, optimizer, ...
    host: float = 0.0  # moved to host memory (CPU offload)

    @property
    def device(self) -> float:
        return math.fsum(self.parts.values())

    def fits(self, device_bytes: float) -> bool:
        return self.device <= device_bytes


def plan_worker(counts: ParameterCounts, shape: ModelShape, work: Workload, strategy: str, workers: int = 1,
                cpu_offload: bool = False) -> WorkerPlan:
    """One worker's memory for a trial of `workers` workers under `strategy` (ddp | fsdp)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: one of {STRATEGIES}, got {strategy!r}")
    if cpu_offload and strategy != "fsdp":
        raise ValueError("cpu_offload needs strategy fsdp")
    frozen_bytes = BF16 if work.lean else FP32
    compute_bytes = BF16 if work.lean else FP32
    quantized = counts.quantized * NF4_BYTES
    state = {"weights": counts.trainable * FP32 + counts.frozen * frozen_bytes,
             "gradients": counts.trainable * FP32,
             "optimizer": counts.trainable * ADAMW_STATE_BYTES}
    parts: dict[str, float] = {}
    host = 0.0
    if strategy == "ddp":
        parts |= state
        parts["weights"] += quantized
        parts["ddp buckets"] = counts.trainable * FP32
    else:
        shard = {k: v / workers for k, v in state.items()}
        if cpu_offload:
            host = math.fsum(shard.values())
            parts = {k: 0.0 for k in shard}
        else:
            parts |= shard
        parts["weights"] += quantized  # a 4-bit base is not sharded (trainers.sharding): whole on every worker
        parts["gathered (root + 2 blocks)"] = (counts.root + 2 * counts.largest_block) * compute_bytes
    tokens = work.batch_per_worker * work.sequence_length
    per_token_layer = 8 * shape.hidden_size + 4 * shape.intermediate_size
    parts["activations"] = tokens * shape.num_layers * per_token_layer * compute_bytes
    if work.causal_lm:
        parts["logits"] = 2 * tokens * shape.vocab_size * FP32
    parts["overhead"] = OVERHEAD_BYTES
    return WorkerPlan(strategy, workers, cpu_offload, parts, host)


def count_parameters(model_config: Any, spec: Any, hparams: dict[str, Any], task: TaskKind,
                     label_names: tuple[str, ...] = ("0", "1")) -> ParameterCounts:
    """The method applied to the model built from its config on the meta device: exact counts, no memory used.
    A quantized method (QLoRA) is counted as its unquantized form (`MethodSpec.unquantized`: LoRA) on a
    full-precision base, whose frozen block linear weights are then the 4-bit ones."""
    import torch
    import transformers

    kind = task
    cls = getattr(transformers, kind.model_class)
    # the task kind's head (a classifier of len(label_names) classes; nothing for generation)
    config = model_config.__class__.from_dict(model_config.to_dict() | kind.head_kwargs(list(label_names)))
    import warnings

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT asking transformers' deprecated names: not the user's
        model = cls.from_config(config)
        from peftsweep.spaces import REGISTRY

        if spec.quantized and spec.unquantized not in REGISTRY:
            raise ValueError(f"{spec.name}: a quantized method must name its unquantized form (MethodSpec.unquantized)")
        apply_spec = REGISTRY[spec.unquantized] if spec.quantized else spec
        model = apply_spec.apply(model, hparams, kind.name)
    blocks = transformer_blocks(model)
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    quantized = 0
    if spec.quantized:
        quantized = sum(m.weight.numel() for b in blocks for m in b.modules()
                        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad) - quantized
    root = sum(p.numel() for p in params if id(p) not in in_blocks)
    largest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)
    return ParameterCounts(trainable, frozen, quantized, root, largest)


def count_at_largest(model_config: Any, spec: Any, task: TaskKind,
                     label_names: tuple[str, ...] = ("0", "1")) -> tuple[ParameterCounts, int]:
    """The method at the largest sizes its ranges allow (`MethodSpec.largest`): its parameter counts, and the most
    tokens it adds to every sequence (a soft prompt)."""
    sets = spec.largest()
    counts = max((count_parameters(model_config, spec, h, task, label_names) for h in sets),
                 key=lambda c: (c.trainable, c.total))
    return counts, max((spec.added_tokens(h) for h in sets), default=0)


def transformer_blocks(model: Any) -> list[Any]:
    """The repeated blocks of a transformer (what FSDP shards one by one): the longest ModuleList of the model."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return list(max(lists, key=len)) if lists else []
