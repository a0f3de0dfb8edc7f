"""How much of the machine's matmul peak a whole sweep turns into training FLOPs, wall clock included.

In one process: measure the peak (torch fp32 and bf16 matmul GFLOP/s on all cores), run a sweep of short trials,
then count the FLOPs each trial did: about 6 x non-embedding parameters x tokens for full fine-tuning (forward,
backward to activations and to weights) and about 4x for frozen-base methods (no weight gradients for the base),
over the real (unpadded) training tokens of every epoch it ran, plus 2x per evaluated token. The fraction
  sweep FLOPs / (fp32 peak x sweep wall clock)
is the figure to raise; the same against the time the workers spent in training steps shows where the rest goes.

    .venv/bin/python bench/roofline.py            # MiniLM-L6 + TREC-6 (200 train), 6 trials, 2 concurrent
    .venv/bin/python bench/roofline.py --quick    # tiny BERT: proves the script runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

from common import REAL_MODEL, SHORT_TASK, WORKLOADS, fresh_ray, run_sweep_config, tiny_assets

EVAL_FACTOR = 2  # FLOPs per non-embedding parameter per evaluated token (forward only)


def matmul_peak_gflops(dtype_name: str, size: int = 1536, repeats: int = 6) -> float:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def non_embedding_params(model: str, label_names: list[str]) -> int:
    from torch import nn

    from peftsweep.trainers.model import load_base
    from peftsweep.trainers.classification import TASK as CLASSIFY

    from peftsweep.spaces.base import HEAD_MODULE_NAMES

    base = load_base(model, label_names, task=CLASSIFY)
    embeddings = sum(p.numel() for m in base.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    head = sum(p.numel() for n, p in base.named_parameters() if set(n.split(".")) & set(HEAD_MODULE_NAMES))
    return sum(p.numel() for p in base.parameters()) - embeddings - head


def train_factor(method: str) -> int:
    """Training FLOPs per non-embedding parameter per token: the method's `flop_factor` (6 full, 4 frozen base)."""
    from peftsweep.spaces import get_method

    return get_method(method).flop_factor


def virtual_tokens(method: str, hparams: dict) -> int:
    """Tokens the method adds to every sequence (soft prompts): its `added_tokens`."""
    from peftsweep.spaces import get_method

    return get_method(method).added_tokens(hparams)


def trial_flops(record, n_params: int, tokens: dict[str, int], sizes: dict[str, int], epochs: int) -> float:
    virtual = virtual_tokens(record.method, record.params)
    def tok(split):
        return tokens[split] + virtual * sizes[split]
    done = epochs if record.status == "completed" else 0
    return n_params * (train_factor(record.method) * tok("train") * done
                       + EVAL_FACTOR * (tok("validation") * done + tok("test")))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="peftsweep-roofline-"))
    model, data = tiny_assets(work) if args.quick else (REAL_MODEL, SHORT_TASK)
    epochs, trials = (1, 1) if args.quick else (2, 6)
    peak_before = {d: matmul_peak_gflops(d) for d in ("float32", "bfloat16")}
    fresh_ray()
    run = run_sweep_config({
        "name": "roofline", "model": model, "data": data, "output_dir": str(work / "sweep"),
        "methods": WORKLOADS["roofline"]["methods"], "train": {"epochs": epochs, "batch_size": 16},
        "search": {"algorithm": "random", "num_samples": trials, "seed": 0, "max_concurrent_trials": 2},
        "resources": {"num_workers": 1, "cpus_per_worker": 1}})
    peak_after = {d: matmul_peak_gflops(d) for d in ("float32", "bfloat16")}
    peak = {d: max(peak_before[d], peak_after[d]) for d in peak_before}

    from peftsweep.search.config import SweepConfig
    from peftsweep.search.plan import build_plan

    plan = build_plan(SweepConfig.model_validate({"name": "x", "model": model, "data": data}))
    tokens = {s: sum(len(ids) for ids in split.input_ids) for s, split in plan.data.splits.items()}
    sizes = {s: len(split) for s, split in plan.data.splits.items()}
    n_params = non_embedding_params(model, plan.data.label_names)
    flops = sum(trial_flops(r, n_params, tokens, sizes, epochs) for r in run.records)
    train_seconds = sum(r.train_seconds for r in run.records if math.isfinite(r.train_seconds))
    figures = {"peak_gflops": peak, "peak_before": peak_before, "peak_after": peak_after,
               "non_embedding_params": n_params, "tokens_per_split": tokens, "trials": len(run.records),
               "sweep_wall_seconds": run.wall_seconds, "sweep_gflop": flops / 1e9, "cpu_busy": run.busy_fraction,
               "achieved_gflops_wall": flops / 1e9 / run.wall_seconds,
               "fraction_of_fp32_peak_wall": flops / 1e9 / run.wall_seconds / peak["float32"],
               "train_step_seconds_sum": train_seconds}
    print(f"\nmatmul peak on {os.cpu_count()} cores: fp32 {peak['float32']:.0f} GFLOP/s, "
          f"bf16 {peak['bfloat16']:.0f} GFLOP/s (best of before/after the sweep)")
    print(f"sweep: {len(run.records)} trials, {run.wall_seconds:.0f} s wall, CPU busy {run.busy_fraction:.0%}, "
          f"{flops / 1e9:.0f} GFLOP of training + evaluation ({n_params:,} non-embedding parameters)")
    print(f"achieved {figures['achieved_gflops_wall']:.2f} GFLOP/s over the wall clock = "
          f"{figures['fraction_of_fp32_peak_wall']:.2%} of the fp32 matmul peak")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
