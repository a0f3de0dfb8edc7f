"""The memory plan of a sweep, before Ray starts: per method, what one worker of its trials holds under each strategy it
may use (trainers.memory_plan), the device memory that is compared with, the strategy `auto` picks, and a refusal,
with the numbers and the ways out, when nothing the user allowed fits.

Device memory comes from the GPUs this process can see (the smallest of them), else from `resources.gpu_memory_gb`.
The plan is enforced only for trials that train on GPUs with a known device memory; on CPU it is printed, not
enforced, and `auto` means ddp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftsweep.spaces import MethodSpec
from peftsweep.trainers.memory_plan import (GIB, ModelShape, Workload, WorkerPlan, count_at_largest, count_parameters,
                                            plan_worker)

if TYPE_CHECKING:
    from peftsweep.trainers.config import TrialConfig
    from peftsweep.trainers.task_kind import TaskKind

# The parts of a worker's plan that are counted exactly: a trial cannot need less than their sum, whatever its
# activations and its allocator do (those parts are estimates, left out here).
EXACT_PARTS = ("weights", "gradients", "optimizer", "ddp buckets", "gathered (root + 2 blocks)")


@dataclass(frozen=True)
class DeviceMemory:
    bytes: float | None  # None: unknown (no GPU visible, no resources.gpu_memory_gb)
    source: str  # where the number came from, for the printout
    enforced: bool  # trials train on GPUs and the memory is known


@dataclass(frozen=True)
class MethodMemory:
    """One method's plans (those it may use, in the order `auto` tries them) and the one its trials run with."""

    method: str
    plans: tuple[WorkerPlan, ...]
    chosen: WorkerPlan | None  # None: nothing fits (enforced plans only), or not planned
    not_planned: str | None = None  # why the method could not be counted (its trials then say it themselves)


@dataclass(frozen=True)
class MemoryPlan:
    device: DeviceMemory
    methods: dict[str, MethodMemory] = field(default_factory=dict)

    @property
    def strategies(self) -> dict[str, str]:
        return {m: mm.chosen.strategy for m, mm in self.methods.items() if mm.chosen is not None}


def visible_gpu_memory() -> tuple[float, str] | None:
    """The smallest visible GPU's memory and its name, or None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            return None
        props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver: as if there were no GPU
        return None
    smallest = min(props, key=lambda p: p.total_memory)
    return float(smallest.total_memory), f"{smallest.name}, seen by this process"


def device_memory(gpu_memory_gb: float | None, trains_on_gpu: bool) -> DeviceMemory:
    seen = visible_gpu_memory()
    if seen is not None:
        return DeviceMemory(seen[0], seen[1], trains_on_gpu)
    if gpu_memory_gb is not None:
        return DeviceMemory(gpu_memory_gb * GIB, "resources.gpu_memory_gb", trains_on_gpu)
    return DeviceMemory(None, "unknown: no GPU visible here; set resources.gpu_memory_gb to check", False)


def candidates(asked: str, cpu_offload: bool) -> list[tuple[str, bool]]:
    """(strategy, cpu_offload) in the order they are tried: what the user asked, `auto` = ddp, then fsdp."""
    fsdp = ("fsdp", cpu_offload)
    return {"ddp": [("ddp", False)], "fsdp": [fsdp], "auto": [("ddp", False), fsdp]}[asked]


def plan_method(name: str, spec: MethodSpec, model_config: Any, *, task: TaskKind, label_names: list[str],
                batch_size: int, max_length: int, workers: int, lean: bool, asked: str, cpu_offload: bool,
                logits_over_vocab: bool, device: DeviceMemory) -> MethodMemory:
    """The method at the largest sizes its ranges allow (`MethodSpec.largest`), under each candidate strategy."""
    try:
        counts, added = count_at_largest(model_config, spec, task, tuple(label_names))
    except Exception as exc:  # e.g. a broken optional package PEFT imports: not the plan's to report
        return MethodMemory(name, (), None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    work = Workload(-(-batch_size // workers), max_length + added, logits_over_vocab, lean)
    shape = ModelShape.from_config(model_config)
    plans = tuple(plan_worker(counts, shape, work, strategy, workers, offload)
                  for strategy, offload in candidates(asked, cpu_offload))
    if not device.enforced:
        return MethodMemory(name, plans, plans[0])
    return MethodMemory(name, plans, next((p for p in plans if p.fits(device.bytes)), None))


def gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def describe(plan: WorkerPlan) -> str:
    offload = " + cpu offload" if plan.cpu_offload else ""
    return f"{plan.strategy}{offload} over {plan.workers} worker{'s' if plan.workers > 1 else ''}"


def format_plan(memory: MemoryPlan) -> list[str]:
    """The table `validate` and `run` print: GiB per worker on the device, by part."""
    where = (f"{gib(memory.device.bytes)} GiB ({memory.device.source})" if memory.device.bytes is not None
             else memory.device.source)
    how = "" if memory.device.enforced else "; printed, not enforced (trials on CPU, or device memory unknown)"
    lines = [f"memory plan, GiB per worker at the largest sizes of each range; device {where}{how}",
             f"  {'method':<10} {'strategy':<30} {'weights':>8} {'grads':>6} {'optim':>6} {'activ':>7} "
             f"{'other':>6} {'total':>7} {'host':>6}  fits"]
    for mm in memory.methods.values():
        if mm.not_planned:
            lines.append(f"  {mm.method:<10} not planned: {mm.not_planned}")
        for plan in mm.plans:
            parts = plan.parts
            other = plan.device - sum(parts.get(k, 0) for k in ("weights", "gradients", "optimizer", "activations"))
            fits = "-" if memory.device.bytes is None else ("yes" if plan.fits(memory.device.bytes) else "no")
            mark = " <- chosen" if plan is mm.chosen and len(mm.plans) > 1 else ""
            lines.append(f"  {mm.method:<10} {describe(plan):<30} {gib(parts.get('weights', 0)):>8} "
                         f"{gib(parts.get('gradients', 0)):>6} {gib(parts.get('optimizer', 0)):>6} "
                         f"{gib(parts.get('activations', 0)):>7} {gib(other):>6} {gib(plan.device):>7} "
                         f"{gib(plan.host):>6}  {fits}{mark}")
    return lines


def refusals(memory: MemoryPlan, asked: dict[str, str], cpu_offload: dict[str, bool]) -> list[str]:
    """One problem per method that fits under no strategy it may use, with the numbers and the ways out."""
    problems = []
    for name, mm in memory.methods.items():
        if mm.chosen is not None or mm.not_planned:
            continue
        needs = ", ".join(f"{gib(p.device)} GiB under {describe(p)}" for p in mm.plans)
        ways = ["more workers per trial (resources.num_workers, or resources.per_method."
                f"{name}.num_workers) with fsdp"]
        if asked[name] == "ddp":
            ways.append("resources.strategy: fsdp (or auto)")
        if not cpu_offload[name]:
            ways.append("resources.cpu_offload: true")
        ways.append("a smaller train.batch_size or data.max_length")
        problems.append(f"resources: a {name} trial does not fit a worker: it needs {needs}, and the device has "
                        f"{gib(memory.device.bytes)} GiB ({memory.device.source}); ways out: {'; '.join(ways)}")
    return problems


def plan_sweep(config: Any, methods: dict[str, MethodSpec], label_names: list[str], max_length: int,
               available: dict[str, float] | None) -> tuple[MemoryPlan, list[str]]:
    """The memory plan of a validated sweep config (search.config.SweepConfig) and its refusals. `available`: the
    Ray cluster's resources when known; without them (a cluster not yet connected) the trials count as GPU trials
    when gpus_per_worker is a number above 0, or auto with resources.gpu_memory_gb set."""
    from peftsweep.trainers.loop import computes_in_bf16
    from peftsweep.trainers.model import load_model_config
    from peftsweep.trainers.tasks import get_task

    r = config.resources
    if available is not None:
        on_gpu = {m: r.for_method(m, available.get("GPU", 0) > 0).gpus_per_worker > 0 for m in methods}
    else:
        on_gpu = {m: (r.for_method(m, r.gpu_memory_gb is not None).gpus_per_worker > 0) for m in methods}
    trains_on_gpu = any(on_gpu.values())
    device = device_memory(r.gpu_memory_gb, trains_on_gpu)
    model_config = load_model_config(config.model, config.trust_remote_code)
    kind = get_task(config.task)
    asked = {m: r.strategy_of(m) for m in methods}
    offload = {m: r.cpu_offload_of(m) for m in methods}
    planned = {}
    for name, spec in methods.items():
        lean = computes_in_bf16(config.train.precision, on_gpu[name])  # a GPU is assumed to have bf16
        method_device = device if on_gpu[name] else DeviceMemory(device.bytes, device.source, False)
        planned[name] = plan_method(name, spec, model_config, task=kind, label_names=label_names,
                                    batch_size=config.train.batch_size, max_length=max_length,
                                    workers=r.for_method(name).num_workers, lean=lean, asked=asked[name],
                                    cpu_offload=offload[name], logits_over_vocab=kind.logits_over_vocab,
                                    device=method_device)
    memory = MemoryPlan(device, planned)
    return memory, refusals(memory, asked, offload)


def planned_minimum_mb(trial: TrialConfig) -> float:
    """The least memory one worker of this trial needs, MiB: its parameters, their gradients and optimizer state (and
    DDP's buckets with more than one worker; FSDP's gathered working set), counted exactly on the meta device. A
    `constraints.peak_memory_mb` below it cannot be kept, so such a trial is not run."""
    from peftsweep.spaces import get_method
    from peftsweep.trainers.loop import computes_in_bf16
    from peftsweep.trainers.model import load_model_config
    from peftsweep.trainers.tasks import get_task

    kind, spec, r = get_task(trial.task), get_method(trial.method), trial.resources
    model_config = load_model_config(trial.model, trial.trust_remote_code)
    counts = count_parameters(model_config, spec, trial.hparams, kind, tuple(trial.label_names))
    work = Workload(max(1, trial.train.batch_size // r.num_workers), trial.max_length + spec.added_tokens(trial.hparams),
                    kind.logits_over_vocab, computes_in_bf16(trial.train.precision, r.use_gpu))
    plan = plan_worker(counts, ModelShape.from_config(model_config), work, r.strategy, r.num_workers, r.cpu_offload)
    counted = [part for part in EXACT_PARTS if part != "ddp buckets" or r.num_workers > 1]  # 1 worker: no DDP wrapper
    return sum(v for k, v in plan.parts.items() if k in counted) / 2**20
