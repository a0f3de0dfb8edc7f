"""Interactive plotly figures: each draws one part of `FigureData` (computed once in dashboards.figure_data)."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from peftsweep.dashboards.figure_data import FigureData, Panel, ParetoData
from peftsweep.search.results.objectives import LABELS

FADED = 0.35


def pareto(plane: ParetoData) -> go.Figure:
    """One cost (log) against validation accuracy: one trace per method; the front as a step line when it is over this
    cost alone, else its members ringed where they fall on this plane."""
    fig = go.Figure()
    for s in plane.series:
        fig.add_trace(go.Scatter(
            x=[m.x for m in s.markers], y=[m.y for m in s.markers], mode="markers", name=s.name, meta="method",
            marker=dict(color=s.style.colour, symbol=s.style.symbol, size=11, line=dict(width=1, color="#333"),
                        opacity=[FADED if m.faded else 1.0 for m in s.markers]),
            text=[m.hover for m in s.markers], hovertemplate="%{text}<extra></extra>"))
    for method in dict.fromkeys(b.method for b in plane.confirmed):
        bars = [b for b in plane.confirmed if b.method == method]
        fig.add_trace(go.Scatter(
            x=[b.x for b in bars], y=[b.y for b in bars], mode="markers", name=f"{method} confirmed", meta="confirmed",
            error_y=dict(type="data", symmetric=False, array=[b.high - b.y for b in bars],
                         arrayminus=[b.y - b.low for b in bars], color=bars[0].style.colour, thickness=2, width=6),
            marker=dict(color="white", symbol=bars[0].style.symbol, size=12,
                        line=dict(width=2, color=bars[0].style.colour)),
            text=[b.hover for b in bars], hovertemplate="%{text}<extra></extra>"))
    if plane.front:
        name = "Pareto front" + (" (confirmed means)" if plane.confirmed else "")
        xs, ys = [x for x, _ in plane.front], [y for _, y in plane.front]
        if plane.staircase:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", color="#111", dash="dot"),
                                     name=name, meta="front", hoverinfo="skip"))
        else:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=name, meta="front", hoverinfo="skip",
                                     marker=dict(symbol="circle-open", size=20, color="#111", line=dict(width=2))))
    if plane.reference:
        fig.add_hline(y=plane.reference.y, line=dict(color="#888", dash="dash"),
                      annotation_text=plane.reference.label, annotation_position="bottom right")
    if plane.floor:
        fig.add_hline(y=plane.floor.y, line=dict(color="#b22", dash="dot"),
                      annotation_text=plane.floor.label, annotation_position="top left")
    note = f"; {plane.confirmed_note}" if plane.confirmed_note else ""
    over = "" if plane.staircase else f"<br><sup>front over {plane.front_over}</sup>"
    fig.update_layout(title=f"Accuracy against {LABELS[plane.cost]} (faded: stopped early, failed or over budget"
                            f"{note}){over}",
                      xaxis=dict(title=plane.x_title, type="log" if plane.log_x else "linear"),
                      yaxis=dict(title=plane.y_title), legend_title="method", height=520)
    return fig


def per_method(data: FigureData) -> go.Figure:
    """Each method's accuracy against its key hyperparameter (r, virtual tokens, bottleneck size, else LR)."""
    panels: list[Panel] = data.panels
    cols = max(1, min(4, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{p.method}: {p.key}" for p in panels])
    for i, p in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scatter(x=[m.x for m in p.markers], y=[m.y for m in p.markers], mode="markers",
                                 name=p.method, marker=dict(color=p.style.colour, size=9), showlegend=False,
                                 text=[m.hover for m in p.markers], hovertemplate="%{text}<extra></extra>"),
                      row=row, col=col)
        fig.update_xaxes(type="log", range=[math.log10(v) for v in p.x_range], row=row, col=col)
        fig.update_yaxes(range=list(p.y_range), row=row, col=col)
    fig.update_layout(title=f"{data.y_title.capitalize()} against each method's key hyperparameter",
                      height=300 * rows)
    return fig


def learning_curves(data: FigureData) -> go.Figure:
    fig = go.Figure()
    for c in data.curves:
        fig.add_trace(go.Scatter(x=[p[0] for p in c.points], y=[p[1] for p in c.points], mode="lines+markers",
                                 name=c.label, line=dict(color=c.style.colour)))
    fig.update_layout(title="Learning curves of the front members", xaxis_title="epoch",
                      yaxis_title=data.y_title, height=420)
    return fig


def parallel(data: FigureData) -> go.Figure:
    dims = [dict(label=a.label, values=a.values) | (dict(tickvals=a.ticks[0], ticktext=a.ticks[1]) if a.ticks else {})
            for a in data.parallel]
    fig = go.Figure(go.Parcoords(line=dict(color=data.parallel_colour, colorscale="Viridis", showscale=True),
                                 dimensions=dims))
    fig.update_layout(title="All trials", height=420)
    return fig


def hypervolume_curve(data: FigureData) -> go.Figure:
    """Hypervolume of the front found after each trial, in start order."""
    xs = list(range(1, len(data.hypervolume) + 1))
    fig = go.Figure(go.Scatter(x=xs, y=data.hypervolume, mode="lines+markers", name="hypervolume"))
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
