"""PNG versions of the main plots (matplotlib: no browser needed): each draws one part of `FigureData`."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatter, NullFormatter  # noqa: E402

from peftsweep.dashboards.figure_data import FigureData, ParetoData, Style  # noqa: E402
from peftsweep.search.results.objectives import LABELS  # noqa: E402

MARKERS = "osDPX^*hpv"
FADED = 0.35


def marker(style: Style) -> str:
    return MARKERS[style.shape]


def pareto_png(data: FigureData, plane: ParetoData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for s in plane.series:
        ax.scatter([m.x for m in s.markers], [m.y for m in s.markers], label=s.name, color=s.style.colour,
                   marker=marker(s.style), s=60, edgecolors="#333",
                   alpha=[FADED if m.faded else 1.0 for m in s.markers])
    for b in plane.confirmed:
        ax.errorbar([b.x], [b.y], yerr=[[b.y - b.low], [b.high - b.y]], fmt=marker(b.style), color=b.style.colour,
                    markerfacecolor="white", markersize=8, capsize=4, linewidth=1.5)
    if plane.confirmed:
        ax.plot([], [], "o", color="#333", markerfacecolor="white", label=plane.confirmed_note)
    if plane.front:
        label = "Pareto front" + (" (confirmed means)" if plane.confirmed else "")
        xs, ys = [x for x, _ in plane.front], [y for _, y in plane.front]
        if plane.staircase:
            ax.step(xs, ys, where="post", color="#111", linestyle=":", label=label)
        else:
            ax.scatter(xs, ys, s=260, facecolors="none", edgecolors="#111", linewidths=1.5, label=label)
    if plane.reference:
        ax.axhline(plane.reference.y, color="#888", linestyle="--", label=plane.reference.label)
    if plane.floor:
        ax.axhline(plane.floor.y, color="#b22", linestyle=":", label=plane.floor.label)
    if plane.log_x:
        ax.set_xscale("log")
        # plain numbers (300, not 3 x 10^2); minor ticks labelled only where a panel spans about a decade or less
        ax.xaxis.set_major_formatter(LogFormatter())
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.2, 0.5)))
    ax.set_xlim(*plane.x_range)
    ax.set_xlabel(plane.x_title)
    ax.set_ylabel(plane.y_title)
    over = "" if plane.staircase else f"\nfront over {plane.front_over}"
    ax.set_title(f"{data.experiment}: accuracy against {LABELS[plane.cost]}{over}", fontsize=10 if over else None)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def pareto_pngs(data: FigureData, directory: Path) -> list[Path]:
    """pareto.png: accuracy against the first cost objective; pareto_<cost>.png for each other one."""
    return [pareto_png(data, plane, directory / ("pareto.png" if i == 0 else f"pareto_{plane.cost}.png"))
            for i, plane in enumerate(data.planes)]


def per_method_png(data: FigureData, path: Path) -> Path:
    cols = max(1, min(4, len(data.panels)))
    rows = max(1, math.ceil(len(data.panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for i, p in enumerate(data.panels):
        ax = axes[i // cols][i % cols]
        if p.markers:  # a method whose only trials failed before their first validation has none
            ax.scatter([m.x for m in p.markers], [m.y for m in p.markers], color=p.style.colour,
                       alpha=[FADED if m.faded else 1.0 for m in p.markers])
        ax.set_xscale("log")
        ax.set_xlim(*p.x_range)
        ax.set_ylim(*p.y_range)
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap in small panels
        ax.set_title(p.method, fontsize=9)
        ax.set_xlabel(p.key, fontsize=8)
        ax.set_ylabel(data.y_title.replace("validation", "val"), fontsize=8)
    for j in range(len(data.panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    return save(fig, path)


def curves_png(data: FigureData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in data.curves:
        ax.plot([p[0] for p in c.points], [p[1] for p in c.points], marker="o", label=c.label, color=c.style.colour)
    ax.set_xlabel("epoch")
    ax.set_ylabel(data.y_title)
    ax.set_title("Learning curves of the front members")
    if data.curves:
        ax.legend(fontsize=8)
    return save(fig, path)


def hypervolume_png(data: FigureData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(data.hypervolume) + 1), data.hypervolume, marker="o")
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume")
    ax.set_title("Hypervolume against trial number")
    return save(fig, path)


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_pngs(data: FigureData, directory: Path) -> list[Path]:
    return [*pareto_pngs(data, directory), per_method_png(data, directory / "per_method.png"),
            curves_png(data, directory / "learning_curves.png"), hypervolume_png(data, directory / "hypervolume.png")]
