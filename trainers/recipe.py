"""The recipe every worker of a trial runs. Read it top to bottom.

It knows nothing of the sweep: it gets a `TrialConfig` (as a dict) and the tokenized data, and reports per-epoch
metrics (and, on rank 0, a checkpoint) through its session (trainers.session: a Ray Train worker, or the trial's own
process).
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist

from peftsweep.environment import quiet_libraries
from peftsweep.metric_names import (CHECKPOINT_MB, DDP_PARAM_DIVERGENCE, EVAL_SAMPLES_PER_SECOND, NUM_NODES,
                                    PEAK_MEMORY_MB, PEAK_RESERVED_MB, RESTARTS, SAMPLES_PER_SECOND, TOKENS_PER_SECOND,
                                    TRAIN_LOSS, TRAIN_SECONDS, split_scores)
from peftsweep.spaces import get_method
from peftsweep.startup_marks import enabled as marking, mark, process_created_at
from peftsweep.trainers.checkpoint import save_checkpoint, save_gathered_checkpoint, shipped_mb
from peftsweep.trainers.config import TrialConfig
from peftsweep.trainers.data import TokenizedData
from peftsweep.trainers.faults import NonFiniteLossError, is_fatal, raise_if_fatal_recorded, record_fatal
from peftsweep.trainers.forgetting import base_general_loss, batch_size_for, forgetting
from peftsweep.trainers.loop import (autocast, begin_epoch, optimizer_for, seed_everything, train_epoch,
                                      uses_bf16)
from peftsweep.trainers.metrics import PeakMemory
from peftsweep.trainers.memory_plan import count_parameters
from peftsweep.trainers.model import build_model, build_skeleton, load_model_config, load_tokenizer
from peftsweep.trainers.sharding import make_frozen_lean, reshard, shard, weight_dtypes
from peftsweep.trainers.state import (Progress, check_same_strategy, is_sharded_state, read_training_state,
                                      restore_optimizer, restore_sharded_training_state, restore_trainable,
                                      save_sharded_training_state, save_training_state)
from peftsweep.trainers.session import InProcessSession, RayTrainSession
from peftsweep.trainers.task_kind import EvalContext
from peftsweep.trainers.tasks import get_task



def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Each worker of a trial's Ray Train job."""
    run_recipe(config, RayTrainSession())


def run_recipe(config: dict[str, Any], session: RayTrainSession | InProcessSession) -> None:
    """One worker's training: `config` as `trainers.launch.make_trainer` builds it; `session`: where it runs."""
    quiet_libraries()  # this worker's process: other libraries' notices stay out of its log
    if marking():  # bench/overhead.py --breakdown (peftsweep.startup_marks)
        mark("process_created", at=process_created_at())
        mark("recipe_started")
    # 1. What to do, typed; the data tokenized once by the driver, fetched from the object store.
    cfg = TrialConfig.model_validate(config["trial"])
    task = get_task(cfg.task)  # what the model learns to do and how it is scored (trainers.tasks)
    run_dir = config.get("run_dir")
    raise_if_fatal_recorded(run_dir)  # a restart after an out-of-memory error would only repeat it
    data: TokenizedData = config["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    rank, world, device = session.rank, session.world, session.device
    # The method applied to the model on the meta device (nothing allocated) imports the code that builds them, so
    # that the memory counted from here on is the trial's tensors', not the libraries' its first build imports.
    count_parameters(load_model_config(cfg.model, cfg.trust_remote_code), get_method(cfg.method), cfg.hparams, task,
                     tuple(cfg.label_names))
    memory = PeakMemory(device)
    memory.start()  # this trial's own peak, from before its model is built, also in a process that ran others before
    mark("data_ready", rank=rank)
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    seed_everything(cfg.train.seed)
    placement = _placement()  # which Ray nodes this trial's workers run on (a restart may move them)
    # How the workers hold the model (trainers.sharding): DDP replicas or FSDP shards, decided before Ray started
    # (the memory plan); lean weights keep the frozen ones in bf16 where bf16 computes (a GPU, or precision: bf16).
    sharded = cfg.resources.strategy == "fsdp" and dist.is_initialized()
    lean = uses_bf16(device, cfg.train.precision)
    where = {"device": device.type, "dist_backend": dist.get_backend() if dist.is_initialized() else "none",
             "autocast": "bf16" if lean else "fp32", "strategy": "fsdp" if sharded else "ddp",
             "cpu_offload": "yes" if sharded and cfg.resources.cpu_offload else "no", "trains_in": session.kind}

    # 2. The pre-trained model with the method applied; parameters counted before DDP or FSDP wraps it. FSDP shards it
    #    from host memory onto the device (a 4-bit base is placed by bitsandbytes and stays). After a restart (a worker
    #    died, the sweep was resumed) the trainable tensors come from the last checkpoint.
    load_on = torch.device("cpu") if sharded and not get_method(cfg.method).quantized else device
    model, counts, _ = build_model(cfg.model, cfg.method, cfg.hparams, cfg.label_names, device=load_on,
                                   trust_remote_code=cfg.trust_remote_code, pad_token_id=data.pad_token_id,
                                   task=task)
    if lean:
        make_frozen_lean(model)
    where |= weight_dtypes(model)
    checkpoint, saved = _last_training_state(session)
    if saved:
        check_same_strategy(saved, sharded)
    progress = (Progress(**saved["progress"]) if is_sharded_state(saved) else restore_trainable(saved, model)) \
        if saved else Progress()
    progress.restarts += 1 if saved else 0
    for past in progress.history if saved else []:  # a driver killed before it logged these results gets them now
        session.report(past | {RESTARTS: progress.restarts, "checkpoint_path": checkpoint.path}, None)
    if progress.epoch >= cfg.train.epochs:  # it had finished: nothing left to train
        return
    if sharded:
        model = ddp_model = shard(model, device, lean=lean, cpu_offload=cfg.resources.cpu_offload)
    else:  # a 4-bit model is already placed on its device by bitsandbytes and must not be moved again
        ddp_model = session.wrap_model(model, move_to_device=not getattr(model, "is_quantized", False))
    mark("model_ready", rank=rank)

    # 3. Batches: each worker gets its shard (DistributedSampler); the global batch is split across workers.
    per_worker_batch = max(1, cfg.train.batch_size // world)
    grouped = cfg.train.group_by_length  # then the loader deals each rank its share itself
    loader = session.wrap_loader(
        task.train_loader(data.splits["train"], per_worker_batch, data.pad_token_id, cfg.train.seed, grouped, rank,
                          world), shards_itself=grouped)
    optimizer, scheduler = optimizer_for(ddp_model, cfg.hparams["lr"], cfg.train, len(loader) * cfg.train.epochs,
                                         fused=False if sharded else None)
    if saved and sharded:
        with checkpoint.as_directory() as directory:
            restore_sharded_training_state(Path(directory), saved, model, optimizer, scheduler)
    elif saved:
        restore_optimizer(saved, optimizer, scheduler)

    # 4. Train, validate every epoch, test once at the end (the test split is for reporting, never for search).
    decode = None
    if task.decodes:
        tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    context = EvalContext(batch_size=cfg.train.eval_batch_size, device=device, precision=cfg.train.precision,
                          decode=decode, max_new_tokens=cfg.generation.max_new_tokens or data.max_new_tokens,
                          match=cfg.generation.match, scoring=cfg.generation.scoring,
                          answer_pattern=cfg.generation.answer_pattern,
                          length_normalized=cfg.generation.length_normalized, sharded=sharded, in_length_order=grouped)

    # `forgetting:` (trainers.forgetting): the base's loss on the general text, before the first step (a PEFT model
    # with its adapter disabled; any other model as it is, nothing trained yet); kept across restarts
    general = data.general_text if task.has_lm_head else None
    on_text = dict(pad_token_id=data.pad_token_id, device=device,
                   batch_size=batch_size_for(general or [], cfg.train.eval_batch_size),
                   autocast=lambda: autocast(device, cfg.train.precision))
    if general and progress.base_general_loss is None:
        progress.base_general_loss = base_general_loss(model, general, **on_text)
        reshard(model)  # FSDP: no gathered copy left for the first step to run on (trainers.sharding)

    def evaluate_split(split: str) -> tuple[dict[str, float], float]:
        """({"accuracy", <the task's extra metric>, its throughputs}, examples per second) of the whole split."""
        start = time.perf_counter()
        scores = task.evaluate(model, data.splits[split], data, context)
        reshard(model)
        elapsed = _max_across_ranks(time.perf_counter() - start, device)
        return scores, len(data.splits[split]) / max(elapsed, 1e-9)

    # FSDP: the method's skeleton that rank 0 writes its files from, built once per trial (on the meta device)
    skeleton = functools.cache(lambda: build_skeleton(cfg.model, cfg.method, cfg.hparams, cfg.label_names,
                                                      trust_remote_code=cfg.trust_remote_code,
                                                      pad_token_id=data.pad_token_id, task=task))
    train_started_at = time.time()  # wall clock: the trial's fixed cost is the time before this
    for epoch in range(progress.epoch + 1, cfg.train.epochs + 1):
        begin_epoch(loader, cfg.train.seed, epoch)
        start = time.perf_counter()
        try:
            first = epoch == 1  # the trial's first step (startup_marks)
            stats = train_epoch(ddp_model, loader, optimizer, scheduler, cfg.train, device,
                                after_first_step=functools.partial(mark, "first_step", rank=rank) if first else None)
        except NonFiniteLossError as exc:  # every rank stops here together: no error for Ray Train to retry
            if rank == 0:
                record_fatal(run_dir, exc, f"epoch {epoch}")
            return
        except Exception as exc:
            if is_fatal(exc):  # out of memory: raised, and a restarted worker fails at once (see trainers.faults)
                record_fatal(run_dir, exc, f"epoch {epoch}")
            raise
        progress.train_seconds += time.perf_counter() - start
        progress.examples += stats.examples * world
        progress.tokens += int(_all_reduce(float(stats.tokens), device, dist.ReduceOp.SUM))
        val, val_rate = evaluate_split("validation")
        metrics = {"epoch": epoch, TRAIN_LOSS: _mean_across_ranks(stats.loss, device),
                   # scores as val_<name>; throughputs (…_per_second) as they are, with eval_ for the whole pass
                   **split_scores("val", {k: v for k, v in val.items() if not k.endswith("per_second")}),
                   **{k: v for k, v in val.items() if k.endswith("per_second")},
                   EVAL_SAMPLES_PER_SECOND: val_rate,
                   TRAIN_SECONDS: progress.train_seconds, RESTARTS: progress.restarts,
                   SAMPLES_PER_SECOND: progress.examples / max(progress.train_seconds, 1e-9),
                   TOKENS_PER_SECOND: progress.tokens / max(progress.train_seconds, 1e-9), **counts.as_metrics()}
        if general:
            metrics |= forgetting(model, general, base_loss=progress.base_general_loss, **on_text)
            reshard(model)
        if epoch == cfg.train.epochs:
            test, _ = evaluate_split("test")
            metrics |= split_scores("test", {k: v for k, v in test.items() if not k.endswith("per_second")})
            if not sharded:  # FSDP holds one copy, sharded: nothing to diverge
                metrics[DDP_PARAM_DIVERGENCE] = _param_divergence(model, device)
        metrics[PEAK_MEMORY_MB] = _max_across_ranks(memory.peak_mb(), device)
        if (reserved := memory.reserved_mb()) is not None:
            metrics[PEAK_RESERVED_MB] = _max_across_ranks(reserved, device)
        metrics |= {"train_started_at": train_started_at, "reported_at": time.time(), "num_workers": world,
                    # the ranks that really synchronise (without a process group DDP's checks pass by construction)
                    "process_group_size": dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1,
                    "gpus_per_worker": cfg.resources.gpus_per_worker} | placement | where
        progress.epoch = epoch
        progress.history.append(metrics)

        # 5. Report with the checkpoint: the method's files (adapter-only for PEFT) + training state, from rank 0;
        #    under FSDP every rank adds its shard of the training state and rank 0 writes the method's files from the
        #    gathered trained tensors (into the method's skeleton: its base on the meta device).
        with tempfile.TemporaryDirectory() as tmp:
            written = False
            files = dict(model_name=cfg.model, method=cfg.method, hparams=cfg.hparams, label_names=data.label_names,
                         max_length=data.max_length, counts=counts, epoch=epoch, task=task)
            # what the method ships is measured before the training state joins it (its history then holds the size)
            if sharded:
                save_gathered_checkpoint(model, Path(tmp), rank=rank, skeleton=skeleton, **files)
                if rank == 0:
                    metrics[CHECKPOINT_MB] = shipped_mb(Path(tmp))
                save_sharded_training_state(Path(tmp), model, optimizer, scheduler, progress, rank)
                written = True
            elif rank == 0:
                save_checkpoint(model, Path(tmp), **files)
                metrics[CHECKPOINT_MB] = shipped_mb(Path(tmp))
                save_training_state(Path(tmp), model, optimizer, scheduler, progress)
                written = True
            session.report(metrics, Path(tmp) if written else None)


def _placement() -> dict[str, Any]:
    """The Ray node ids and IPs of every rank, gathered once (gloo/NCCL all_gather of a small object)."""
    context = ray.get_runtime_context()
    mine = (context.get_node_id(), ray.util.get_node_ip_address())
    ranks = [mine]
    if dist.is_available() and dist.is_initialized():
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, mine)
    node_ids = sorted({node for node, _ in ranks})
    return {"node_ids": ",".join(node_ids), "node_ips": ",".join(sorted({ip for _, ip in ranks})),
            NUM_NODES: len(node_ids)}


def _last_training_state(session) -> tuple[ray.train.Checkpoint | None, dict[str, Any] | None]:
    """The latest reported checkpoint of this run (kept across worker restarts and re-launches)."""
    checkpoint = session.last_checkpoint()
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as directory:
        return checkpoint, read_training_state(Path(directory))


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
