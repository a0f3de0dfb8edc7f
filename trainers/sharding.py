"""How a trial's workers hold the model: DDP (each worker a whole replica) or FSDP2 (parameters, gradients and
optimizer state sharded across the workers), and the lean weights both use.

- Lean weights (`train.precision` auto on a GPU, or bf16): frozen floating-point weights are stored in bf16 (no fp32
  copy of a base that is never trained, no per-step casts); trainable ones stay fp32 (PEFT's adapters, and the master
  weights of full fine-tuning). Quantized weights (QLoRA's 4-bit base) are left as they are.
- FSDP2: `fully_shard` on every transformer block, then on the root (embeddings, output layer, norms, a
  classification head, a soft prompt's encoder: frozen and trainable parameters in one group), as Ray's own FSDP2
  example does inside the worker. Under lean weights its mixed-precision policy gathers parameters in bf16 and reduces
  gradients in fp32. `cpu_offload` keeps the sharded state in host memory (FSDP2's CPUOffloadPolicy). QLoRA's 4-bit
  weights are left out of sharding (`ignored_params`: FSDP2 would turn bitsandbytes' packed parameters into plain
  tensors and lose their quantization state); each worker keeps the 4-bit base whole and the adapters are sharded.
- `generate` runs through the root's FSDP hooks (`register_fsdp_forward_method`), and every rank takes the same
  number of evaluation rows (`shard_rows`): a rank with fewer rows of its own pads with a row whose result it drops, so no rank waits in a collective the others never enter.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from peftsweep.trainers.memory_plan import transformer_blocks

def is_quantized_weight(p: torch.Tensor) -> bool:
    """A bitsandbytes 4-bit (or 8-bit) weight: packed, with quantization state the layer needs."""
    return type(p).__name__ in ("Params4bit", "Int8Params")


def make_frozen_lean(model: nn.Module) -> int:
    """Store the frozen floating-point weights in bf16; returns how many parameters it changed."""
    changed = 0
    for p in model.parameters():
        if not p.requires_grad and p.dtype == torch.float32 and not is_quantized_weight(p):
            p.data = p.data.to(torch.bfloat16)
            changed += p.numel()
    return changed


def weight_dtypes(model: nn.Module) -> dict[str, str]:
    """The storage dtype of the trainable and the frozen parameters (what a trial records: `fp32`, `bf16`, mixed)."""
    def name(params: Iterable[torch.Tensor]) -> str:
        kinds = sorted({str(p.dtype).removeprefix("torch.").replace("float32", "fp32").replace("bfloat16", "bf16")
                        for p in params})
        return "+".join(kinds) or "none"

    params = list(model.parameters())
    return {"trainable_dtype": name(p for p in params if p.requires_grad),
            "frozen_dtype": name(p for p in params if not p.requires_grad)}


def shard(model: nn.Module, device: torch.device, *, lean: bool, cpu_offload: bool = False) -> nn.Module:
    """FSDP2 over every rank of the default process group; the model is returned, sharded in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
    from torch.distributed.fsdp import register_fsdp_forward_method

    if device.type == "cuda":
        torch.cuda.set_device(device)  # the mesh (and so the shards) on this worker's GPU
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if lean else None,
                                  reduce_dtype=torch.float32 if lean else None)
    ignored = {p for p in model.parameters() if is_quantized_weight(p)}
    options: dict[str, Any] = {"mesh": mesh, "mp_policy": policy,
                               "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
                               "ignored_params": ignored or None}
    for block in transformer_blocks(model):
        fully_shard(block, **options)
    fully_shard(model, **options)
    if hasattr(model, "generate"):
        register_fsdp_forward_method(model, "generate")
    return model


def reshard(model: nn.Module) -> None:
    """Free every FSDP module's gathered parameters; call it after forward passes outside training (evaluation,
    forgetting). FSDP2 keeps the root module's parameters gathered after a forward pass (a backward is expected to
    follow at once); when none follows, the next training step runs its forward on that copy and the root's
    parameters (embeddings, head, final norm) miss that step's update: found as a loss that left DDP's at the third
    step (tests/trainers/test_fsdp.py). A model without FSDP modules: nothing to do."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_rows(n: int, rank: int, world: int, even: bool) -> tuple[list[int], int]:
    """This rank's rows of an evaluation split (every world-th from its rank) and how many of them are its own. With
    `even` (FSDP) every rank gets as many rows as the rank with the most, padding with row 0 whose results the caller
    drops, so that all ranks run the same number of batches and meet in the same collectives."""
    rows = list(range(rank, n, world))
    own = len(rows)
    if even and n:
        rows += [0] * (-(-n // world) - own)
    return rows, own


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from what may be a DTensor (FSDP2's gradient norm is one)."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor
