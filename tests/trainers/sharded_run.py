"""Two ranks over gloo, in plain processes (no Ray): the same trial pieces the recipe uses (build_model, the
strategy's wrap, optimizer_for, train_epoch, the task kind's evaluation, the checkpoint functions), run under DDP and
under FSDP so that tests can compare them step by step. One spawn runs every case, to pay the imports once."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass(frozen=True)
class Case:
    key: str
    model: str
    method: str
    hparams: dict[str, Any]
    task: str
    data: Any  # TokenizedData
    strategy: str  # ddp | fsdp
    steps: int = 4
    batch_size: int = 8
    precision: str = "fp32"
    restart_after: int | None = None  # save the training state after this many steps, rebuild, restore, go on
    save_to: str | None = None  # write the method's files (and manifest) here after training
    evaluate_after: int | None = None  # evaluate after this many steps (as between epochs), then go on training
    extra: dict[str, Any] = field(default_factory=dict)


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def _build(case: Case, rank: int, world: int):
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from peftsweep.trainers.config import TrainSettings
    from peftsweep.trainers.loop import optimizer_for, seed_everything, uses_bf16
    from peftsweep.trainers.model import build_model
    from peftsweep.trainers.sharding import make_frozen_lean, shard
    from peftsweep.trainers.tasks import get_task

    device = torch.device("cpu")
    seed_everything(0)
    kind = get_task(case.task)
    model, counts, _ = build_model(case.model, case.method, case.hparams, case.data.label_names, device=device,
                                   pad_token_id=case.data.pad_token_id, task=kind)
    lean = uses_bf16(device, case.precision)
    if lean:
        make_frozen_lean(model)
    if case.strategy == "fsdp":
        model = wrapped = shard(model, device, lean=lean)
    else:
        wrapped = DistributedDataParallel(model)
    plain = kind.train_loader(case.data.splits["train"], case.batch_size // world, case.data.pad_token_id, 0)
    loader = DataLoader(plain.dataset, batch_size=plain.batch_size, collate_fn=plain.collate_fn,
                        sampler=DistributedSampler(plain.dataset, num_replicas=world, rank=rank, shuffle=True, seed=0))
    settings = TrainSettings(precision=case.precision)
    optimizer, scheduler = optimizer_for(wrapped, case.hparams["lr"], settings, 2 * case.steps, fused=False)
    return model, wrapped, counts, loader, optimizer, scheduler, settings, kind


def _mean(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def _decoder(case: Case, kind):
    if not kind.decodes:
        return None
    from peftsweep.trainers.model import load_tokenizer

    tokenizer = load_tokenizer(case.model)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def run_case(case: Case, rank: int, world: int, scratch: Path) -> dict[str, Any]:
    from peftsweep.trainers.checkpoint import save_checkpoint, save_gathered_checkpoint
    from peftsweep.trainers.loop import autocast, begin_epoch, train_epoch
    from peftsweep.trainers.model import build_skeleton
    from peftsweep.trainers.state import (Progress, read_training_state, restore_sharded_training_state,
                                          save_sharded_training_state)
    from peftsweep.trainers.task_kind import EvalContext

    model, wrapped, counts, loader, optimizer, scheduler, settings, kind = _build(case, rank, world)
    from peftsweep.trainers.forgetting import base_general_loss, forgetting
    from peftsweep.trainers.sharding import reshard

    device = torch.device("cpu")
    general = case.data.general_text if kind.has_lm_head else None
    on_text = dict(pad_token_id=case.data.pad_token_id, batch_size=4, device=device,
                   autocast=lambda: autocast(device, case.precision))
    base = base_general_loss(model, general, **on_text) if general else None  # before the first step
    reshard(model)  # as the recipe does after every pass outside training (trainers.sharding.reshard)
    begin_epoch(loader, 0, 1)
    batches = list(loader)[:case.steps]
    losses = []
    for step, batch in enumerate(batches):
        if case.restart_after is not None and step == case.restart_after:
            directory = scratch / f"{case.key}-state"
            save_sharded_training_state(directory, model, optimizer, scheduler, Progress(epoch=0), rank)
            dist.barrier()
            model, wrapped, counts, loader, optimizer, scheduler, settings, kind = _build(case, rank, world)
            restore_sharded_training_state(directory, read_training_state(directory), model, optimizer, scheduler)
        loss = train_epoch(wrapped, [batch], optimizer, scheduler, settings, device).loss
        losses.append(_mean(loss))
        if case.evaluate_after is not None and step + 1 == case.evaluate_after:  # an evaluation between epochs
            kind.evaluate(model, case.data.splits["validation"], case.data,
                          EvalContext(batch_size=2, device=device, precision=case.precision,
                                      max_new_tokens=case.data.max_new_tokens, sharded=case.strategy == "fsdp",
                                      decode=_decoder(case, kind)))
            reshard(model)
    # one more backward without a step, to count the gradients each rank holds
    wrapped.train()
    batch = batches[0]
    with autocast(device, case.precision):
        loss = wrapped(**batch).loss
    loss.backward()
    params = list(model.parameters())
    measured = {"param_bytes": local_bytes(params),
                "grad_bytes": local_bytes(p.grad for p in params if p.requires_grad),
                "optimizer_bytes": local_bytes(v for state in optimizer.state.values() for v in state.values()
                                               if torch.is_tensor(v) and v.ndim > 0)}
    optimizer.zero_grad(set_to_none=True)
    decode = _decoder(case, kind)
    # two rows a batch: the 9 validation rows give rank 0 three batches and rank 1 two, unless padded
    context = EvalContext(batch_size=2, device=device, precision=case.precision, decode=decode,
                          max_new_tokens=case.data.max_new_tokens, sharded=case.strategy == "fsdp")
    scores = kind.evaluate(model, case.data.splits["validation"], case.data, context)
    if case.save_to:
        files = dict(model_name=case.model, method=case.method, hparams=case.hparams,
                     label_names=case.data.label_names, max_length=case.data.max_length, counts=counts, epoch=1,
                     task=kind)
        if case.strategy == "fsdp":
            save_gathered_checkpoint(model, Path(case.save_to), rank=rank, **files,
                                     skeleton=lambda: build_skeleton(case.model, case.method, case.hparams,
                                                                     case.data.label_names,
                                                                     pad_token_id=case.data.pad_token_id,
                                                                     task=kind))
        elif rank == 0:
            save_checkpoint(model, Path(case.save_to), **files)
        dist.barrier()
    forgot = forgetting(model, general, base_loss=base, **on_text) if general else {}
    return {"losses": losses, "eval": scores, "counts": counts.as_metrics(), "forgetting": forgot, **measured}


def _worker(rank: int, world: int, init_file: str, cases: list[Case], out: str) -> None:
    torch.set_num_threads(1)
    # a rank left waiting in a collective (a shard one batch short) fails in a minute instead of hanging the suite
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    results = {}
    try:
        for case in cases:
            results[case.key] = run_case(case, rank, world, Path(out))
    finally:
        dist.destroy_process_group()
    with open(Path(out) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(results, f)


def run_two_ranks(cases: list[Case], out: Path) -> list[dict[str, dict[str, Any]]]:
    """Every case on two gloo ranks; each rank's results by case key."""
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(out / "init"), cases, str(out)), nprocs=2, join=True)
    return [pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in range(2)]
