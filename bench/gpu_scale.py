"""Large models on one GPU (issue 29's GPU part): lean weights against fp32 + autocast, and full fine-tuning that
does not fit under DDP trained with FSDP + CPU offload; each against the memory plan's estimate.

    python bench/gpu_scale.py                      # on the GPU machine, with .gpu-bundle/ carried (make gpu-bundle)
    .venv/bin/python bench/gpu_scale.py --dry-run  # on a CPU machine: the same path at toy sizes (no offload)

1. LoRA (r 16 on every linear layer; bench/workloads.yaml `gpu_scale`) on TinyLlama-1.1B's shape, batch 8 x 512,
   peftsweep's own training step (trainers/loop.py), in a fresh process each: frozen weights fp32 under bf16 autocast
   (before), then lean (frozen bf16, adapters fp32: what trials do now). Step time, model-FLOP utilisation (as
   bench/gpu_sweep.py counts it) and peak `torch.cuda.max_memory_allocated`, against the memory plan's estimate.
2. Full fine-tuning (bench/workloads.yaml `gpu_scale`) of a Llama-shaped decoder chosen so that the memory plan says
   DDP does not fit this GPU (its memory capped at --device-gib, default 40, with
   `torch.cuda.set_per_process_memory_fraction`, so that the host's 128 GiB holds the offloaded state) while FSDP +
   CPU offload does: one rank (NCCL), random weights from the config, a few AdamW steps through
   trainers.sharding.shard(cpu_offload=True); its loss, step time and peak memory.
Prints one table and writes gpu_scale.json.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_sweep import BIG, TOY, bundle_parser, ensure_dependencies, peak_tflops, step_timing  # noqa: E402

GIB = 2**30


def workload(part: str) -> tuple[str, dict]:
    """(method, hyperparameters) of a part, from bench/workloads.yaml `gpu_scale`: the code names no method."""
    from common import WORKLOADS

    chosen = WORKLOADS["gpu_scale"][part]
    return chosen["method"], chosen.get("hparams", {})


def plan_for(shape: dict, method: str, hparams: dict, batch: int, seq: int, strategy: str, offload: bool,
             lean: bool = True):
    from transformers import LlamaConfig

    from peftsweep.spaces import get_method
    from peftsweep.trainers.memory_plan import ModelShape, Workload, count_parameters, plan_worker
    from peftsweep.trainers.generation import TASK as GENERATE

    config = LlamaConfig(**shape, tie_word_embeddings=False)
    spec = get_method(method)
    counts = count_parameters(config, spec, spec.defaults() | hparams, GENERATE)
    return plan_worker(counts, ModelShape.from_config(config), Workload(batch, seq, True, lean), strategy, 1, offload)


def lean_against_fp32(dry_run: bool) -> list[dict]:
    shape, batch, seq, steps = (TOY, 4, 32, 4) if dry_run else (BIG, 8, 512, 20)
    peak, _ = peak_tflops()
    method, hparams = workload("lean")
    rows = []
    for lean in (False, True):
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            r = pool.apply(step_timing, (method, hparams, shape, batch, seq, steps), {"lean": lean})
        plan = plan_for(shape, method, hparams, batch, seq, "ddp", False, lean=lean)
        rows.append({"what": f"{method} {'lean bf16 frozen' if lean else 'fp32 + autocast'}", **r,
                     "mfu": r["flops_per_step"] / r["step_seconds"] / (peak * 1e12),
                     "planned_mb": plan.device / 2**20})
    return rows


def offload_shape(device_gib: float, batch: int, seq: int) -> dict:
    """The smallest Llama shape (hidden 3072, growing in layers) whose `offload` method (full fine-tuning) does not
    fit `device_gib` under DDP."""
    method, hparams = workload("offload")
    for layers in range(8, 64, 2):
        shape = {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": layers,
                 "num_attention_heads": 24, "num_key_value_heads": 8, "vocab_size": 32000}
        ddp = plan_for(shape, method, hparams, batch, seq, "ddp", False)
        if ddp.device > device_gib * GIB:
            return shape
    raise SystemExit(f"no shape up to 64 layers exceeds {device_gib} GiB")


def _offload_worker(method: str, hparams: dict, shape: dict, batch: int, seq: int, steps: int, device_gib: float,
                    dry_run: bool, out: str):
    import torch
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftsweep.trainers.config import TrainSettings
    from peftsweep.trainers.loop import optimizer_for, train_epoch
    from peftsweep.trainers.sharding import make_frozen_lean, shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    cuda = torch.cuda.is_available() and not dry_run
    device = torch.device("cuda" if cuda else "cpu")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    if cuda:
        torch.cuda.set_device(0)
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, device_gib * GIB / total))
    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=max(seq, 64), tie_word_embeddings=False)
    start = time.perf_counter()
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")  # on the host: it does not fit the GPU
    built = time.perf_counter() - start
    from peftsweep.spaces import TaskName, get_method

    spec = get_method(method)
    model = spec.apply(model, spec.defaults() | hparams, TaskName.GENERATION)
    if cuda:
        make_frozen_lean(model)  # as the recipe does (full fine-tuning freezes nothing)
    model = shard(model, device, lean=cuda, cpu_offload=cuda)
    settings = TrainSettings(precision="auto" if cuda else "fp32")
    optimizer, scheduler = optimizer_for(model, 1e-5, settings, total_steps=10 * steps, fused=False)
    data = torch.randint(3, shape["vocab_size"], (batch, seq), device=device)
    batch_ = {"input_ids": data, "attention_mask": torch.ones_like(data), "labels": data}
    losses, times = [], []
    for _ in range(steps):
        t = time.perf_counter()
        loss = train_epoch(model, iter([batch_]), optimizer, scheduler, settings, device).loss
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        losses.append(loss)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    dist.destroy_process_group()
    Path(out).write_text(json.dumps({"losses": losses, "step_seconds": times, "peak_memory_mb": peak,
                                     "build_seconds": built}))


def offload_full(dry_run: bool, device_gib: float) -> dict:
    batch, seq, steps = (2, 32, 2) if dry_run else (4, 512, 4)
    shape = TOY if dry_run else offload_shape(device_gib, batch, seq)
    method, hparams = workload("offload")
    ddp = plan_for(shape, method, hparams, batch, seq, "ddp", False)
    offloaded = plan_for(shape, method, hparams, batch, seq, "fsdp", True)
    out = Path(tempfile.mkdtemp()) / "offload.json"
    process = multiprocessing.get_context("spawn").Process(
        target=_offload_worker, args=(method, hparams, shape, batch, seq, steps, device_gib, dry_run, str(out)))
    process.start()
    process.join()
    if process.exitcode != 0:
        return {"problem": f"the FSDP + CPU offload run exited with {process.exitcode}"}
    measured = json.loads(out.read_text())
    return {"shape": shape, "batch": batch, "seq": seq, "planned_ddp_gib": ddp.device / GIB,
            "planned_offload_gib": offloaded.device / GIB, "planned_host_gib": offloaded.host / GIB,
            "device_gib": device_gib, **measured}


def main(argv: list[str] | None = None) -> int:
    parser = bundle_parser(__doc__)
    parser.add_argument("--device-gib", type=float, default=40.0, help="GPU memory the offload run may use")
    parser.add_argument("--out", default=None, help="where gpu_scale.json goes (default: a temp dir)")
    args = parser.parse_args(argv)
    ensure_dependencies(Path(args.bundle), Path(args.deps or tempfile.mkdtemp(prefix="gpu-deps-")), args.install)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run on a CPU machine")
    start = time.time()
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "lean": lean_against_fp32(args.dry_run),
              "offload": offload_full(args.dry_run, args.device_gib)}
    print(f"\n{report['device']}, torch {report['torch']}")
    print(f"{'':30}{'s/step':>9}{'MFU':>8}{'peak MiB':>10}{'planned MiB':>13}")
    for r in report["lean"]:
        print(f"{r['what']:30}{r['step_seconds']:9.3f}{r['mfu']:8.1%}{r['peak_memory_mb']:10.0f}"
              f"{r['planned_mb']:13.0f}")
    o = report["offload"]
    if "problem" in o:
        print(f"problem: {o['problem']}")
    else:
        print(f"{workload('offload')[0]}, {o['shape']['num_hidden_layers']} layers x {o['shape']['hidden_size']}: plan "
              f"{o['planned_ddp_gib']:.1f} GiB under DDP against {o['device_gib']:g} GiB; FSDP + CPU offload planned "
              f"{o['planned_offload_gib']:.1f} GiB on the GPU and {o['planned_host_gib']:.1f} on the host, measured "
              f"peak {o['peak_memory_mb'] / 1024:.1f} GiB; losses {[round(x, 3) for x in o['losses']]}, "
              f"{sum(o['step_seconds'][1:]) / max(1, len(o['step_seconds']) - 1):.1f} s/step after the first")
    report["wall_seconds"] = time.time() - start
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_scale.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"{report['wall_seconds']:.0f} s; figures: {out / 'gpu_scale.json'}")
    return 1 if "problem" in o else 0


if __name__ == "__main__":
    sys.exit(main())
