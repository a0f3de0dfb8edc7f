"""Padding with and without `train.group_by_length`, on the demo's data: the share of padded tokens in the training
batches and in evaluation, and the time of a training step and of an evaluation pass, both ways in one process.

    .venv/bin/python bench/padding.py            # the demo: MiniLM-L6 + TREC-6 (600 train, 400 validation), LoRA
    .venv/bin/python bench/padding.py --seeds 5  # both ways under 5 seeds (model init + batch order): does grouping
                                                 # change the accuracy? paired t-test on the validation accuracy
    .venv/bin/python bench/padding.py --quick    # tiny BERT, toy data: proves the script runs (no timing claims)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import REAL_MODEL, WORKLOADS, tiny_assets  # also puts the repository on sys.path

DEMO_DATA = {"preset": "trec6", "train_size": 600, "validation_size": 400, "test_size": 500}  # configs/demo.yaml


def padded_share_of(loader) -> float:
    real = total = 0
    for batch in loader:
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / total


def measure(model_name: str, data_spec: dict, batch_size: int, epochs: int, threads: int, seeds: int = 1) -> dict:
    import torch

    from peftsweep.spaces import get_method
    from peftsweep.trainers.classification import TASK, evaluate, train_loader
    from peftsweep.trainers.batching import by_length, padded_share
    from peftsweep.trainers.config import TrainSettings
    from peftsweep.trainers.data import DataSpec
    from peftsweep.trainers.launch import prepare_data
    from peftsweep.trainers.loop import begin_epoch, optimizer_for, seed_everything, train_epoch
    from peftsweep.trainers.model import build_model

    torch.set_num_threads(threads)
    data = prepare_data(model_name, DataSpec(**data_spec), task=TASK)
    train, validation = data.splits["train"], data.splits["validation"]
    method = WORKLOADS["overhead"]["method"]
    hp = get_method(method).defaults()
    cpu = torch.device("cpu")
    rows = {}
    for seed, grouped in ((seed, grouped) for seed in range(seeds) for grouped in (False, True)):
        seed_everything(seed)
        model, _, _ = build_model(model_name, method, hp, data.label_names, pad_token_id=data.pad_token_id, task=TASK)
        loader = train_loader(train, batch_size, data.pad_token_id, seed, grouped)
        settings = TrainSettings(epochs=epochs, batch_size=batch_size)
        optimizer, scheduler = optimizer_for(model, hp["lr"], settings, len(loader) * epochs)
        shares, seconds, steps = [], 0.0, 0
        for epoch in range(1, epochs + 1):
            begin_epoch(loader, 0, epoch)
            shares.append(padded_share_of(loader))
            begin_epoch(loader, 0, epoch)
            start = time.perf_counter()
            train_epoch(model, loader, optimizer, scheduler, settings, cpu)
            seconds += time.perf_counter() - start
            steps += len(loader)
        eval_rows = list(range(len(validation)))
        if grouped:
            eval_rows = by_length(eval_rows, [len(ids) for ids in validation.input_ids])
        eval_share = padded_share([eval_rows[i:i + 128] for i in range(0, len(eval_rows), 128)],
                                  [len(ids) for ids in validation.input_ids])
        start = time.perf_counter()
        scores = evaluate(model, validation, data.num_labels, data.pad_token_id, 128, cpu, in_length_order=grouped)
        row = {"train_padded_share": sum(shares) / len(shares), "step_seconds": seconds / steps,
               "eval_padded_share": eval_share, "eval_seconds": time.perf_counter() - start,
               "val_accuracy": scores["accuracy"]}
        rows.setdefault("grouped" if grouped else "shuffled", []).append(row)
    return {"model": model_name, "data": data_spec, "batch_size": batch_size, "epochs": epochs, "threads": threads,
            "seeds": seeds, "runs": rows, "rows": {name: mean_row(runs) for name, runs in rows.items()},
            "accuracy_difference": paired_difference([r["val_accuracy"] for r in rows["grouped"]],
                                                     [r["val_accuracy"] for r in rows["shuffled"]])}


def mean_row(runs: list[dict]) -> dict:
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


def paired_difference(grouped: list[float], shuffled: list[float]) -> dict:
    """Grouped minus shuffled, paired by seed: mean, its 95 % t interval and the paired t-test's p (n >= 2)."""
    from scipy import stats

    differences = [g - s for g, s in zip(grouped, shuffled)]
    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return {"n": n, "mean": mean, "ci95": None, "p": None}
    result = stats.ttest_1samp(differences, 0.0)
    interval = result.confidence_interval(0.95) if result.pvalue == result.pvalue else None
    return {"n": n, "mean": mean, "p": None if result.pvalue != result.pvalue else float(result.pvalue),
            "ci95": None if interval is None else [float(interval.low), float(interval.high)]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, each trained both ways (default 1)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.quick:
        model, data = tiny_assets(Path(tempfile.mkdtemp(prefix="peftsweep-padding-")), n=200)
        figures = measure(model, data, batch_size=16, epochs=1, threads=1, seeds=args.seeds)
    else:
        figures = measure(REAL_MODEL, DEMO_DATA, batch_size=32, epochs=3, threads=1, seeds=args.seeds)
    print(f"\n{figures['model']}, batch {figures['batch_size']}, {figures['epochs']} epochs, "
          f"{figures['threads']} thread(s), {figures['seeds']} seed(s), means:")
    print(f"{'':10}{'train padded':>14}{'step (s)':>10}{'eval padded':>13}{'eval (s)':>10}{'val acc':>9}")
    for name, row in figures["rows"].items():
        print(f"{name:10}{row['train_padded_share']:14.1%}{row['step_seconds']:10.3f}{row['eval_padded_share']:13.1%}"
              f"{row['eval_seconds']:10.2f}{row['val_accuracy']:9.3f}")
    a, b = figures["rows"]["shuffled"], figures["rows"]["grouped"]
    print(f"step time grouped / shuffled: {b['step_seconds'] / a['step_seconds']:.2f}; "
          f"evaluation: {b['eval_seconds'] / a['eval_seconds']:.2f}")
    difference = figures["accuracy_difference"]
    if difference["n"] > 1:
        print("val acc per seed, shuffled: " + " ".join(f"{r['val_accuracy']:.3f}" for r in figures["runs"]["shuffled"])
              + "; grouped: " + " ".join(f"{r['val_accuracy']:.3f}" for r in figures["runs"]["grouped"]))
        interval = ("no interval (every difference equal)" if difference["ci95"] is None
                    else f"95% CI [{difference['ci95'][0]:+.3f}, {difference['ci95'][1]:+.3f}]")
        p = "p undefined" if difference["p"] is None else f"paired t-test p = {difference['p']:.2f}"
        print(f"val acc grouped - shuffled, paired by seed (n = {difference['n']}): {difference['mean']:+.3f}, "
              f"{interval}, {p}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
