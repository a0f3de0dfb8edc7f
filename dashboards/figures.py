"""Interactive plotly figures of a sweep. Each takes `SweepData` and returns a figure; nothing here does I/O."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from peftsweep.dashboards.sweep_data import SweepData, hyperparameters, key_hyperparameter
from peftsweep.search.pareto import Point, hypervolume
from peftsweep.search.summary import is_front_candidate

SYMBOLS = ["circle", "square", "diamond", "cross", "x", "triangle-up", "star", "hexagon", "pentagon", "triangle-down"]
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]


def style(methods: list[str]) -> dict[str, tuple[str, str]]:
    return {m: (PALETTE[i % len(PALETTE)], SYMBOLS[i % len(SYMBOLS)]) for i, m in enumerate(methods)}


def hover(record) -> str:
    hp = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hyperparameters(record).items())
    return (f"<b>{record.method}</b> ({record.status})<br>val acc {record.val_accuracy:.3f}, "
            f"test acc {record.test_accuracy:.3f}<br>trainable {record.trainable_pct:.4g}% "
            f"({record.trainable_params:,.0f})<br>{hp}<br>run {record.run_id}")


def pareto(data: SweepData) -> go.Figure:
    """Trainable % (log) against validation accuracy: one trace per method, the front as a step line."""
    fig = go.Figure()
    colours = style(data.methods)
    for method in data.methods:
        rows = [r for r in data.trials if r.method == method and math.isfinite(r.val_accuracy)]
        colour, symbol = colours[method]
        fig.add_trace(go.Scatter(
            x=[r.trainable_pct for r in rows], y=[r.val_accuracy for r in rows], mode="markers", name=method,
            meta="method", marker=dict(color=colour, symbol=symbol, size=11, line=dict(width=1, color="#333"),
                                       opacity=[1.0 if is_front_candidate(r) else 0.35 for r in rows]),
            text=[hover(r) for r in rows], hovertemplate="%{text}<extra></extra>"))
    front = data.summary.front
    if front:
        fig.add_trace(go.Scatter(x=[r.trainable_pct for r in front], y=[r.val_accuracy for r in front],
                                 mode="lines", line=dict(shape="hv", color="#111", dash="dot"), name="Pareto front",
                                 meta="front", hoverinfo="skip"))
    full = data.summary.reference
    if full:
        fig.add_hline(y=full.val_accuracy, line=dict(color="#888", dash="dash"),
                      annotation_text=f"best full fine-tune {full.val_accuracy:.3f}", annotation_position="bottom right")
    fig.update_layout(title="Accuracy against trainable parameters (faded: stopped early or failed)",
                      xaxis=dict(title="trainable parameters, % of the pre-trained model (log)", type="log"),
                      yaxis=dict(title="validation accuracy"), legend_title="method", height=520)
    return fig


def per_method(data: SweepData) -> go.Figure:
    """Each method's accuracy against its key hyperparameter (r, virtual tokens, bottleneck size, else LR)."""
    methods = data.methods
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{m}: {key_hyperparameter(m)}" for m in methods])
    colours = style(methods)
    for i, method in enumerate(methods):
        key = key_hyperparameter(method)
        records = [r for r in data.trials if r.method == method and math.isfinite(r.val_accuracy)]
        xs = [hyperparameters(r).get(key) for r in records]
        fig.add_trace(go.Scatter(x=xs, y=[r.val_accuracy for r in records], mode="markers", name=method,
                                 marker=dict(color=colours[method][0], size=9), showlegend=False,
                                 text=[hover(r) for r in records], hovertemplate="%{text}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
        fig.update_xaxes(type="log", row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(title="Validation accuracy against each method's key hyperparameter", height=300 * rows)
    return fig


def learning_curves(data: SweepData) -> go.Figure:
    fig = go.Figure()
    colours = style(data.methods)
    for record in data.summary.front:
        points = data.curves.get(record.run_id, [])
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=f"{record.method} {record.trainable_pct:.3g}%",
                                 line=dict(color=colours[record.method][0])))
    fig.update_layout(title="Learning curves of the front members", xaxis_title="epoch",
                      yaxis_title="validation accuracy", height=420)
    return fig


def parallel(data: SweepData) -> go.Figure:
    records = [r for r in data.trials if math.isfinite(r.val_accuracy)]
    codes = {m: i for i, m in enumerate(data.methods)}
    dims = [
        dict(label="method", values=[codes[r.method] for r in records], tickvals=list(codes.values()),
             ticktext=list(codes)),
        dict(label="log10 LR", values=[math.log10(hyperparameters(r).get("lr", 1e-3)) for r in records]),
        dict(label="log10 trainable %", values=[math.log10(r.trainable_pct) for r in records]),
        dict(label="train s", values=[r.train_seconds for r in records]),
        dict(label="val accuracy", values=[r.val_accuracy for r in records]),
        dict(label="test accuracy", values=[r.test_accuracy if math.isfinite(r.test_accuracy) else 0
                                            for r in records]),
    ]
    fig = go.Figure(go.Parcoords(line=dict(color=[r.val_accuracy for r in records], colorscale="Viridis",
                                           showscale=True), dimensions=dims))
    fig.update_layout(title="All trials", height=420)
    return fig


def hypervolume_curve(data: SweepData) -> go.Figure:
    """Hypervolume of the front found after each trial, in start order."""
    by_id = {r.run_id: r for r in data.trials}
    seen, xs, ys = [], [], []
    for n, run_id in enumerate(data.start_order, start=1):
        record = by_id[run_id]
        if is_front_candidate(record):
            seen.append(Point(run_id, record.val_accuracy, record.trainable_pct))
        xs.append(n)
        ys.append(hypervolume(seen))
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name="hypervolume"))
    fig.update_layout(title="Hypervolume against trial number", xaxis_title="trial", yaxis_title="hypervolume",
                      height=380)
    return fig


def importance(scores: dict[str, dict[str, float]]) -> go.Figure:
    """Per-method hyperparameter importance for validation accuracy (fANOVA)."""
    fig = go.Figure()
    for method, values in scores.items():
        fig.add_trace(go.Bar(x=list(values), y=list(values.values()), name=method))
    fig.update_layout(title="Hyperparameter importance for validation accuracy (fANOVA, per method)",
                      barmode="group", yaxis_title="importance", height=400)
    return fig
