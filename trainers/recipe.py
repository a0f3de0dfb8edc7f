"""The recipe every Ray Train worker runs for one trial. Read it top to bottom.

It knows nothing of the sweep: it gets a `TrialConfig` (as a dict) and the tokenized data, and reports per-epoch
metrics (and, on rank 0, a checkpoint) with `ray.train.report`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from trainers.checkpoint import save_checkpoint
from trainers.config import TrialConfig
from trainers.data import TokenizedData
from trainers.loop import evaluate, optimizer_for, seed_everything, train_epoch, train_loader
from trainers.metrics import peak_memory_mb
from trainers.model import build_model


def train_loop_per_worker(config: dict[str, Any]) -> None:
    # 1. What to do, typed; the data tokenized once by the driver, fetched from the object store.
    cfg = TrialConfig.model_validate(config["trial"])
    data: TokenizedData = config["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    seed_everything(cfg.train.seed)

    # 2. The pre-trained model with the method applied; parameters counted before DDP wraps it.
    model, counts, _ = build_model(cfg.model, cfg.method, cfg.hparams, cfg.label_names, device=device,
                                   trust_remote_code=cfg.trust_remote_code, pad_token_id=data.pad_token_id)
    # A 4-bit model is already placed on its device by bitsandbytes and must not be moved again.
    ddp_model = ray.train.torch.prepare_model(model, move_to_device=not getattr(model, "is_quantized", False))

    # 3. Batches: each worker gets its shard (DistributedSampler); the global batch is split across workers.
    per_worker_batch = max(1, cfg.train.batch_size // world)
    loader = ray.train.torch.prepare_data_loader(
        train_loader(data.splits["train"], per_worker_batch, data.pad_token_id, cfg.train.seed))
    steps_per_epoch = len(loader)
    optimizer, scheduler = optimizer_for(ddp_model, cfg.hparams["lr"], cfg.train, steps_per_epoch * cfg.train.epochs)

    # 4. Train, validate every epoch, test once at the end (the test split is for reporting, never for search).
    def evaluate_split(split: str) -> dict[str, float]:
        return evaluate(model, data.splits[split], data.num_labels, data.pad_token_id, cfg.train.eval_batch_size,
                        device, cfg.train.precision)

    train_seconds, examples = 0.0, 0
    for epoch in range(1, cfg.train.epochs + 1):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        loss, seen = train_epoch(ddp_model, loader, optimizer, scheduler, cfg.train, device)
        train_seconds += time.perf_counter() - start
        examples += seen * world
        val = evaluate_split("validation")
        metrics = {"epoch": epoch, "train_loss": _mean_across_ranks(loss, device),
                   "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                   "train_seconds": train_seconds, "samples_per_second": examples / max(train_seconds, 1e-9),
                   **counts.as_metrics()}
        if epoch == cfg.train.epochs:
            test = evaluate_split("test")
            metrics |= {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
                        "ddp_param_divergence": _param_divergence(model, device)}
        metrics["peak_memory_mb"] = _max_across_ranks(peak_memory_mb(device), device)

        # 5. Report; rank 0 attaches the checkpoint (adapter-only for PEFT methods).
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_checkpoint(model, Path(tmp), model_name=cfg.model, method=cfg.method, hparams=cfg.hparams,
                                label_names=data.label_names, max_length=data.max_length, counts=counts, epoch=epoch)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def _param_divergence(model: torch.nn.Module, device: torch.device) -> float:
    """Largest difference of any trainable value between ranks: 0.0 when DDP kept the replicas in sync."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    worst = 0.0
    for p in model.parameters():
        if p.requires_grad:
            high, low = p.detach().clone(), p.detach().clone()
            dist.all_reduce(high, op=dist.ReduceOp.MAX)
            dist.all_reduce(low, op=dist.ReduceOp.MIN)
            worst = max(worst, (high - low).abs().max().item())
    return worst


def _all_reduce(value: float, device: torch.device, op) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.item()


def _mean_across_ranks(value: float, device: torch.device) -> float:
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return _all_reduce(value, device, dist.ReduceOp.SUM) / world


def _max_across_ranks(value: float, device: torch.device) -> float:
    return _all_reduce(value, device, dist.ReduceOp.MAX)
