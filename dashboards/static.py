"""PNG versions of the main plots (matplotlib: no browser needed to render them)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from peftsweep.dashboards.figures import PALETTE  # noqa: E402
from peftsweep.dashboards.sweep_data import SweepData, hyperparameters, key_hyperparameter  # noqa: E402
from peftsweep.search.pareto import Point, hypervolume  # noqa: E402
from peftsweep.search.summary import is_front_candidate  # noqa: E402

MARKERS = "osDPX^*hpv"


def pareto_png(data: SweepData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, method in enumerate(data.methods):
        rows = [r for r in data.trials if r.method == method and math.isfinite(r.val_accuracy)]
        if not rows:  # e.g. its only trial failed before the first validation
            continue
        ax.scatter([r.trainable_pct for r in rows], [r.val_accuracy for r in rows], label=method,
                   color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)], s=60, edgecolors="#333",
                   alpha=[1.0 if is_front_candidate(r) else 0.35 for r in rows])
    front = data.summary.front
    if front:
        ax.step([r.trainable_pct for r in front], [r.val_accuracy for r in front], where="post", color="#111",
                linestyle=":", label="Pareto front")
    full = data.summary.reference
    if full:
        ax.axhline(full.val_accuracy, color="#888", linestyle="--", label=f"best full {full.val_accuracy:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters, % of the pre-trained model (log)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{data.experiment}: accuracy against trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def per_method_png(data: SweepData, path: Path) -> Path:
    methods = data.methods
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for i, method in enumerate(methods):
        ax = axes[i // cols][i % cols]
        key = key_hyperparameter(method)
        records = [r for r in data.trials if r.method == method and math.isfinite(r.val_accuracy)]
        ax.scatter([hyperparameters(r).get(key) for r in records], [r.val_accuracy for r in records],
                   color=PALETTE[i % len(PALETTE)])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap in small panels
        ax.set_title(f"{method}", fontsize=9)
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel("val acc", fontsize=8)
    for j in range(len(methods), rows * cols):
        axes[j // cols][j % cols].axis("off")
    return save(fig, path)


def curves_png(data: SweepData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for record in data.summary.front:
        points = data.curves.get(record.run_id, [])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                label=f"{record.method} {record.trainable_pct:.3g}%")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Learning curves of the front members")
    ax.legend(fontsize=8)
    return save(fig, path)


def hypervolume_png(data: SweepData, path: Path) -> Path:
    by_id = {r.run_id: r for r in data.trials}
    seen, ys = [], []
    for run_id in data.start_order:
        if is_front_candidate(by_id[run_id]):
            seen.append(Point(run_id, by_id[run_id].val_accuracy, by_id[run_id].trainable_pct))
        ys.append(hypervolume(seen))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(ys) + 1), ys, marker="o")
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume")
    ax.set_title("Hypervolume against trial number")
    return save(fig, path)


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_pngs(data: SweepData, directory: Path) -> list[Path]:
    return [pareto_png(data, directory / "pareto.png"), per_method_png(data, directory / "per_method.png"),
            curves_png(data, directory / "learning_curves.png"), hypervolume_png(data, directory / "hypervolume.png")]
