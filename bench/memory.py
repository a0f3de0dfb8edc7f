"""What fits where: the memory plan (trainers/memory_plan.py) of Llama-shaped decoders of about 1B, 3B and 8B
parameters, every registered method at the largest sizes of its ranges, under DDP, FSDP over 8 workers and FSDP over
8 workers with CPU offload, against 24 / 40 / 80 / 141 GB devices. The models are built from their configs on
PyTorch's meta device: no weights, nothing downloaded, a few seconds per model on a laptop.

    .venv/bin/python bench/memory.py                      # prints the tables
    .venv/bin/python bench/memory.py --write docs/scale.md  # and puts them between the markers in docs/scale.md

Shapes, batch, sequence length, workers and devices: bench/workloads.yaml `memory`. Lean weights (bf16 frozen
weights and compute, fp32 trainable ones: `train.precision: auto` on a GPU), generation (a causal LM's logits counted).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import WORKLOADS  # noqa: E402

BEGIN, END = "<!-- memory-table: begin (bench/memory.py --write) -->", "<!-- memory-table: end -->"
GB = 1e9  # devices are sold in GB; the plan's parts are printed in GiB


def tables() -> list[str]:
    from transformers import LlamaConfig

    from peftsweep.spaces import REGISTRY
    from peftsweep.trainers.memory_plan import GIB, ModelShape, Workload, count_at_largest, plan_worker
    from peftsweep.trainers.generation import TASK as GENERATE

    w = WORKLOADS["memory"]
    workers, devices = w["workers"], w["devices_gb"]
    work = Workload(w["batch_per_worker"], w["sequence_length"], causal_lm=True, lean=True)
    lines = [f"Per worker, GiB, at batch {w['batch_per_worker']} x {w['sequence_length']} tokens per worker, lean "
             f"weights, generation; in brackets the smallest of {' / '.join(map(str, devices))} GB devices it fits "
             f"(- : none)."]
    for size, shape in w["models"].items():
        config = LlamaConfig(**shape)
        rows = []
        total = None
        for name, spec in REGISTRY.items():
            counts, added = count_at_largest(config, spec, GENERATE)
            if spec.reference:  # full fine-tuning trains every parameter: its total is the model's
                total = counts.total
            method_work = Workload(work.batch_per_worker, work.sequence_length + added, True, True)
            cells = []
            for strategy, n, offload in (("ddp", workers, False), ("fsdp", workers, False), ("fsdp", workers, True)):
                plan = plan_worker(counts, ModelShape.from_config(config), method_work, strategy, n, offload)
                fits = next((f"{d}" for d in devices if plan.device <= d * GB), "-")
                cells.append(f"{plan.device / GIB:.1f} ({fits})")
            rows.append(f"| {name} | {counts.trainable / 1e6:,.1f} M | " + " | ".join(cells) + " |")
        lines += ["", f"**{size}** ({total / 1e9:.2f} B parameters: hidden {shape['hidden_size']}, "
                      f"{shape['num_hidden_layers']} layers, vocabulary {shape['vocab_size']:,})", "",
                  f"| method | trainable | DDP | FSDP x {workers} | FSDP x {workers} + CPU offload |",
                  "|---|---:|---:|---:|---:|", *rows]
    return lines


def write(path: Path, lines: list[str]) -> None:
    text = path.read_text()
    block = BEGIN + "\n" + "\n".join(lines) + "\n" + END
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no markers {BEGIN} ... {END}")
    path.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="put the tables into this file, between the markers")
    args = parser.parse_args()
    lines = tables()
    print("\n".join(lines))
    if args.write:
        write(args.write, lines)
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()
