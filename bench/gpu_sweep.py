"""The GPU path, proven: a real sweep through Ray Tune and Ray Train on a GPU, and the training steps' share of the
GPU's peak (model-FLOP utilisation), in plain PyTorch and inside a Ray Train worker.

    python bench/gpu_sweep.py                       # on the GPU machine, with .gpu-bundle/ carried (make gpu-bundle)
    .venv/bin/python bench/gpu_sweep.py --dry-run   # on a CPU machine: the same path at toy sizes, no CUDA

1. If Ray, MLflow, Optuna or pydantic cannot be imported, installs the bundle offline (`pip install --no-index
   --no-deps --target`) and runs itself again with it on PYTHONPATH (Ray's worker processes inherit it).
2. A real `peftsweep` sweep, generation task, every registered method once (QLoRA's base in 4 bits on the GPU),
   `resources.gpus_per_worker: auto`, one worker per trial, `train.precision: auto`; then, from MLflow: every trial
   finished, trained on `cuda` with the `nccl` process group and bf16 autocast, and recorded its peak GPU memory.
3. Model-FLOP utilisation of training steps (peftsweep's own optimizer and training step: trainers/loop.py; each
   method applied by its spec) for the methods of bench/workloads.yaml `gpu_mfu` (full fine-tuning, and LoRA on all
   linear layers with r=16) on a Llama-shaped decoder of about 1.1B parameters (TinyLlama's
   shape, random weights, sequence length 512, SDPA attention): FLOPs counted as bench/roofline.py counts them (6 or 4
   x non-embedding parameters x tokens; attention's own FLOPs not counted), over the GPU's dense bf16 peak (the
   spec sheet's for known GPUs, else the best matmul measured here). Once in this process, once inside a one-worker
   Ray Train job; prints the ratio.

Goals (issue 19, in bench/workloads.yaml): full fine-tuning >= 40 % MFU, LoRA >= 30 %; Ray Train steps within 5 % of
plain PyTorch's.
--dry-run checks the same code at toy sizes on CPU (expects cpu / gloo / fp32 instead); no MFU claim.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED_MODULES = ("ray", "mlflow", "optuna", "pydantic", "datasets")
# Dense bf16 tensor-core peaks, TFLOP/s, from the vendors' spec sheets (SXM parts; sparsity not counted).
SPEC_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "GH200": 989.4, "B200": 2250.0}
BIG = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
       "num_key_value_heads": 4, "vocab_size": 32000}  # TinyLlama-1.1B's shape
TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "vocab_size": 512}


def ensure_dependencies(bundle: Path, target: Path, force: bool) -> None:
    """Install the bundle and re-run this script with it, unless everything imports already."""
    if os.environ.get("PEFTSWEEP_GPU_BUNDLE_ACTIVE"):
        return
    if not force and all(importlib.util.find_spec(m) for m in NEEDED_MODULES):
        return
    wheels = sorted(bundle.glob("*.whl"))
    if not wheels:
        sys.exit(f"no wheels in {bundle}: build them with `make gpu-bundle` on a machine with network")
    start = time.time()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                    *map(str, wheels)], check=True)
    print(f"installed {len(wheels)} wheels from {bundle} into {target} in {time.time() - start:.0f} s", flush=True)
    env = os.environ | {"PEFTSWEEP_GPU_BUNDLE_ACTIVE": "1",
                        "PYTHONPATH": os.pathsep.join([str(target), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def sweep_check(out: Path, dry_run: bool) -> dict:
    """A real sweep, every registered method once; its trials checked from MLflow."""
    sys.path.insert(0, str(ROOT))
    from peftsweep import console
    from peftsweep import metric_names as names
    from peftsweep.environment import apply_defaults

    apply_defaults()
    console.install()
    import ray

    from peftsweep.search.config import SweepConfig
    from peftsweep.search.plan import build_plan
    from peftsweep.search.orchestration.sweep import run_sweep
    from peftsweep.search.tracking.client import PLACE_TAGS, ROLE_TAG, client_for
    from peftsweep.spaces import REGISTRY
    from tests.tiny import ANSWER_TEMPLATE, make_causal_dir, make_csv

    model = make_causal_dir(out / "decoder", hidden=256, layers=4)
    csv = make_csv(out / "toy.csv", n=600)
    methods = {name: {} for name in REGISTRY}
    config = {"name": "gpu-sweep", "model": str(model), "output_dir": str(out / "sweep"), "task": "generation",
              "data": {"train_file": str(csv), "template": ANSWER_TEMPLATE},
              "methods": methods, "train": {"epochs": 2, "batch_size": 32, "precision": "auto"},
              "search": {"algorithm": "random", "num_samples": len(methods), "seed": 0, "start_points": "defaults"},
              "resources": {"num_workers": 1, "cpus_per_worker": 2, "gpus_per_worker": "auto"}}
    plan = build_plan(SweepConfig.model_validate(config))
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    start = time.time()
    outcome = run_sweep(plan)
    wall = time.time() - start
    ray.shutdown()
    client = client_for(outcome.tracking_uri)
    expected = {"peftsweep.device": "cpu", "peftsweep.dist_backend": "gloo", "peftsweep.autocast": "fp32"} \
        if dry_run else {"peftsweep.device": "cuda", "peftsweep.dist_backend": "nccl", "peftsweep.autocast": "bf16"}
    rows, problems = [], []
    for run in client.search_runs([outcome.experiment_id], max_results=100):
        if run.data.tags.get(ROLE_TAG) != "trial":
            continue
        m, tags = run.data.metrics, run.data.tags
        place = {k: tags.get(k) for k in PLACE_TAGS}
        rows.append({"method": run.data.params["method"], "status": tags.get("peftsweep.status"),
                     **{k: m.get(k) for k in (names.VAL_ACCURACY, names.PEAK_MEMORY_MB, names.GPU_SECONDS,
                                              names.WORKER_SECONDS)}} | place)
        if tags.get("peftsweep.status") != "completed" or run.info.status != "FINISHED":
            problems.append(f"{run.data.params['method']}: {tags.get('peftsweep.status')} "
                            f"{tags.get('peftsweep.failure', '')[:300]}")
        if place != expected:
            problems.append(f"{run.data.params['method']}: trained on {place}, expected {expected}")
        if not m.get(names.PEAK_MEMORY_MB, 0) > 0 or (not dry_run and not m.get(names.GPU_SECONDS, 0) > 0):
            problems.append(f"{run.data.params['method']}: no peak memory or GPU-seconds recorded")
    missing = set(methods) - {r["method"] for r in rows}
    problems += [f"{name}: no trial" for name in sorted(missing)]
    print(f"\nsweep: {len(rows)} trials in {wall:.0f} s")
    print(f"{'method':10}{'status':>12}{'val acc':>9}{'peak MB':>10}{'GPU-s':>8}  device / backend / autocast")
    for r in sorted(rows, key=lambda r: r["method"]):
        print(f"{r['method']:10}{r['status'] or '-':>12}{r['val_accuracy'] or 0:9.3f}{r['peak_memory_mb'] or 0:10.0f}"
              f"{r['gpu_seconds'] or 0:8.1f}  {r['peftsweep.device']} / {r['peftsweep.dist_backend']} / "
              f"{r['peftsweep.autocast']}")
    return {"wall_seconds": wall, "trials": rows, "problems": problems}


def step_timing(method: str, hparams: dict, shape: dict, batch: int, seq: int, steps: int,
                fused: bool | None = None, lean: bool | None = None) -> dict:
    """Seconds per training step of peftsweep's own step (trainers/loop.py: AdamW, autocast, clipping) on random
    tokens, the method applied by its own spec (spaces/), and the FLOPs one step does as bench/roofline.py counts
    them (the spec's flop_factor). `lean`: frozen weights stored in bf16 (trainers.sharding.make_frozen_lean);
    default: as a trial does (where `train.precision: auto` computes in bf16)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftsweep.spaces import TaskName, get_method
    from peftsweep.trainers.config import TrainSettings
    from peftsweep.trainers.loop import optimizer_for, train_epoch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=max(seq, 64), tie_word_embeddings=False)
    with device:  # initialised where it trains: seconds on a GPU, not a minute of CPU for 1.1B parameters
        model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" in n or "lm_head" in n)
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    spec = get_method(method)
    model = spec.apply(model, spec.defaults() | hparams, TaskName.GENERATION)
    factor = spec.flop_factor
    settings = TrainSettings(precision="auto")
    from peftsweep.trainers.loop import uses_bf16
    from peftsweep.trainers.sharding import make_frozen_lean

    if uses_bf16(device, settings.precision) if lean is None else lean:
        make_frozen_lean(model)
    optimizer, scheduler = optimizer_for(model, 1e-4, settings, total_steps=10 * steps, fused=fused)
    data = torch.randint(3, shape["vocab_size"], (batch, seq), device=device)
    batches = [{"input_ids": data, "attention_mask": torch.ones_like(data), "labels": data}] * steps

    def run(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_epoch(model, iter(batches[:n]), optimizer, scheduler, settings, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(min(3, steps))  # warm-up: kernels chosen, allocator grown
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()  # this method's peak, not an earlier measurement's in this process
    seconds = run(steps) / steps
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    return {"method": method, "step_seconds": seconds, "flops_per_step": factor * non_embedding * batch * seq,
            "tokens_per_second": batch * seq / seconds, "non_embedding_params": non_embedding,
            "peak_memory_mb": memory}


def in_ray_train(method: str, hparams: dict, shape: dict, batch: int, seq: int, steps: int) -> dict:
    """The same measurement inside a one-worker Ray Train job (a GPU when there is one)."""
    import ray
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    import torch

    def loop(cfg: dict) -> None:
        sys.path.insert(0, str(ROOT))
        timing = step_timing(**cfg)
        with tempfile.TemporaryDirectory() as directory:  # Ray Train V2 keeps a result's metrics with a checkpoint
            Path(directory, "timing.json").write_text(json.dumps(timing))
            ray.train.report(timing, checkpoint=ray.train.Checkpoint.from_directory(directory))

    use_gpu = torch.cuda.is_available()
    trainer = TorchTrainer(loop, train_loop_config={"method": method, "hparams": hparams, "shape": shape,
                                                    "batch": batch, "seq": seq, "steps": steps},
                           scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                                        resources_per_worker={"CPU": 2}),
                           run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="gpu-sweep-train-")))
    return trainer.fit().metrics


def peak_tflops() -> tuple[float, str]:
    import torch

    if not torch.cuda.is_available():
        from roofline import matmul_peak_gflops

        return matmul_peak_gflops("bfloat16") / 1e3, "bf16 matmul measured on this CPU"
    name = torch.cuda.get_device_name()
    for key, value in SPEC_PEAK_TFLOPS.items():
        if key in name:
            return value, f"{name}: dense bf16 spec sheet"
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    a @ a
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    return 2 * 8192**3 * 20 / (time.perf_counter() - start) / 1e12, f"{name}: bf16 matmul measured"


def mfu_check(dry_run: bool) -> dict:
    import ray

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    shape, batch, seq, steps = (TOY, 4, 32, 4) if dry_run else (BIG, 8, 512, 30)
    peak, source = peak_tflops()
    from common import WORKLOADS

    rows = {}
    for method, workload in WORKLOADS["gpu_mfu"].items():
        hparams = workload.get("hparams", {})
        # In a fresh process, as the Ray Train worker is: timed in this process after full fine-tuning, LoRA's step
        # took 0.166 s against 0.131 s in a fresh Ray Train worker (H200, 2026-12-01): the ratio compared processes.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            plain = pool.apply(step_timing, (method, hparams, shape, batch, seq, steps))
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
        inside = in_ray_train(method, hparams, shape, batch, seq, steps)
        ray.shutdown()
        rows[method] = {"plain": plain, "ray_train": inside, "goal": workload["goal"],
                        "mfu_plain": plain["flops_per_step"] / plain["step_seconds"] / (peak * 1e12),
                        "mfu_ray_train": inside["flops_per_step"] / inside["step_seconds"] / (peak * 1e12),
                        "ray_over_plain": inside["step_seconds"] / plain["step_seconds"]}
    first = next(iter(rows.values()))
    print(f"\nMFU: Llama-shaped decoder, {first['plain']['non_embedding_params'] / 1e9:.2f} B non-embedding "
          f"parameters, batch {batch} x {seq} tokens, {steps} timed steps; peak {peak:.1f} TFLOP/s ({source})")
    print(f"{'method':8}{'plain s/step':>14}{'MFU':>8}{'Ray Train s/step':>18}{'MFU':>8}{'Ray/plain':>11}"
          f"{'peak MB':>9}  goal")
    for method, r in rows.items():
        goal = f"MFU >= {r['goal']:.0%}"
        print(f"{method:8}{r['plain']['step_seconds']:14.3f}{r['mfu_plain']:8.1%}{r['ray_train']['step_seconds']:18.3f}"
              f"{r['mfu_ray_train']:8.1%}{r['ray_over_plain']:11.3f}{r['plain']['peak_memory_mb']:9.0f}  {goal}, "
              f"Ray/plain <= 1.05")
    return {"peak_tflops": peak, "peak_source": source, "batch": batch, "seq": seq, "steps": steps, "rows": rows}


def bundle_parser(description: str) -> argparse.ArgumentParser:
    """The options every GPU bench script takes: --dry-run and where the bundle's wheels are and go."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on CPU: the path runs (no CUDA needed)")
    parser.add_argument("--bundle", default=str(ROOT / ".gpu-bundle"), help="wheels from bench/gpu_bundle.py")
    parser.add_argument("--deps", default=None, help="where to install them (default: a temp dir)")
    parser.add_argument("--install", action="store_true", help="install the bundle even if everything imports")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = bundle_parser(__doc__)
    parser.add_argument("--out", default=None, help="sweep output and gpu_sweep.json (default: a temp dir)")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-mfu", action="store_true")
    args = parser.parse_args(argv)
    ensure_dependencies(Path(args.bundle), Path(args.deps or tempfile.mkdtemp(prefix="gpu-deps-")), args.install)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run on a CPU machine")
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-sweep-"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}", flush=True)
    report = {}
    if not args.skip_sweep:
        report["sweep"] = sweep_check(out, args.dry_run)
    if not args.skip_mfu:
        report["mfu"] = mfu_check(args.dry_run)
    report["wall_seconds"] = time.time() - start
    (out / "gpu_sweep.json").write_text(json.dumps(report, indent=2, default=str))
    problems = report.get("sweep", {}).get("problems", [])
    for problem in problems:
        print(f"problem: {problem}")
    print(f"\n{'PASS' if not problems else 'FAIL'}: {report['wall_seconds']:.0f} s in all; figures: "
          f"{out / 'gpu_sweep.json'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
