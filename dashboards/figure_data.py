"""Every figure's data, computed once from a sweep (optuna's visualization split): the plotly renderers
(`dashboards.figures`) and the matplotlib ones (`dashboards.static`) only draw what is here.

Pure functions of `SweepData`; no drawing library is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peftsweep.dashboards.sweep_data import SweepData, hyperparameters, key_hyperparameter
from peftsweep.metric_names import PEAK_MEMORY_MB, TRAIN_SECONDS, TRAINABLE_PCT
from peftsweep.search.results.confirmation import Confirmation, format_interval
from peftsweep.search.results.objectives import AXIS_TITLES, LABELS, SIGNED_COSTS, Objectives
from peftsweep.search.results.pareto import hypervolume
from peftsweep.search.results.records import TrialRecord, floor_accuracy, is_front_candidate

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]
SYMBOLS = ["circle", "square", "diamond", "cross", "x", "triangle-up", "star", "hexagon", "pentagon", "triangle-down"]
ACCURACY_PAD = 0.05  # around the plotted accuracies, inside [0, 1]


@dataclass(frozen=True)
class Style:
    colour: str
    symbol: str  # a plotly symbol name; the matplotlib renderer maps it to a marker
    shape: int  # the symbol's index in SYMBOLS (static.MARKERS holds the same shapes in the same order)


@dataclass(frozen=True)
class Marker:
    x: float
    y: float
    hover: str
    faded: bool = False  # stopped early or failed: drawn, but never a front candidate


@dataclass(frozen=True)
class Series:
    name: str
    style: Style
    markers: list[Marker]


@dataclass(frozen=True)
class Line:
    y: float
    label: str


@dataclass(frozen=True)
class ErrorBar:
    """A confirmed configuration: its mean validation accuracy over the confirm runs, with its interval."""

    x: float
    y: float
    low: float  # = y when the interval is unknown (one run)
    high: float
    hover: str
    style: Style
    method: str


@dataclass(frozen=True)
class ParetoData:
    """Accuracy against one cost (a log axis). The front is over the sweep's objectives: over this cost alone it is a
    staircase on this plane (`staircase`); else (more costs, or a cost that is not an objective) its members are
    marked where they fall."""

    series: list[Series]  # one per method with at least one finite accuracy
    front: list[tuple[float, float]]  # (cost, val accuracy), cheapest first: of the confirmed means if confirmed
    reference: Line | None  # the best full fine-tune's accuracy (its confirmed mean if confirmed)
    floor: Line | None = None  # the accuracy with nothing trained (majority class, zero-shot)
    x_range: tuple[float, float] = (0.1, 10.0)  # the cost's axis around the markers (log, unless `log_x` is off)
    confirmed: list[ErrorBar] = field(default_factory=list)  # empty: the front is unconfirmed
    confirmed_note: str = ""  # what the bars are, for the title
    cost: str = TRAINABLE_PCT  # the metric on the x axis
    x_title: str = AXIS_TITLES[TRAINABLE_PCT]
    staircase: bool = True  # the front is over this cost alone (and the quality): drawn as a step line
    front_over: str = ""  # what the front is over, for the title
    y_title: str = "validation accuracy"  # the quality (`metric:`)
    log_x: bool = True  # the cost on a log axis; a signed one (forgetting) on a linear axis


@dataclass(frozen=True)
class Panel:
    method: str
    key: str  # the hyperparameter on the x axis
    style: Style
    markers: list[Marker]
    x_range: tuple[float, float]  # log-scale axis: positive bounds
    y_range: tuple[float, float]


@dataclass(frozen=True)
class Curve:
    label: str
    style: Style
    points: list[tuple[int, float]]  # (epoch, val accuracy)


@dataclass(frozen=True)
class Axis:
    label: str
    values: list[float]
    ticks: tuple[list[float], list[str]] | None = None


@dataclass(frozen=True)
class FigureData:
    experiment: str
    planes: list[ParetoData]  # accuracy against each cost objective, in the objectives' order
    y_title: str  # the quality's axis title (`metric:`): "validation accuracy", "validation MCC", ...
    panels: list[Panel]
    curves: list[Curve]
    hypervolume: list[float]  # after each trial, in start order
    parallel: list[Axis]
    parallel_colour: list[float]


def styles(methods: list[str]) -> dict[str, Style]:
    """A colour and a shape per method; past the palette's 10 colours the shapes shift by one each round, so no two
    methods share both (the 11th method is the 1st colour with the 2nd shape)."""
    shapes = [(i + i // len(PALETTE)) % len(SYMBOLS) for i in range(len(methods))]
    return {m: Style(PALETTE[i % len(PALETTE)], SYMBOLS[shape], shape) for i, (m, shape) in
            enumerate(zip(methods, shapes))}


def hover(record: TrialRecord, objectives: Objectives = Objectives()) -> str:
    hp = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hyperparameters(record).items())
    costs = "".join(f"<br>{LABELS[c]} {getattr(record, c):.4g}" for c in objectives.costs if c != TRAINABLE_PCT)
    over = f"<br><b>over budget</b>: {record.over_budget}" if record.over_budget else ""
    q = objectives.quality_label
    return (f"<b>{record.method}</b> ({record.status})<br>val {q} {objectives.score(record):.3f}, "
            f"test {q} {objectives.test_score(record):.3f}<br>trainable {record.trainable_pct:.4g}% "
            f"({record.trainable_params:,.0f}){costs}{over}<br>{hp}<br>run {record.run_id}")


def accuracy_range(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """Around the values, never beyond what the quality can be (`bounds`: [0, 1], or [-1, 1] for MCC; a single point
    no longer spans 0.5 to 1.5)."""
    if not values:
        return bounds
    low, high = min(values) - ACCURACY_PAD, max(values) + ACCURACY_PAD
    return max(bounds[0], low), min(bounds[1] + ACCURACY_PAD / 2, high)


def log_range(values: list[float]) -> tuple[float, float]:
    """A log axis around positive values; one distinct value gets a factor of 2 each side."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return 0.1, 10.0
    low, high = min(positive), max(positive)
    if high / low < 1.5:
        return low / 2, high * 2
    return low / 1.3, high * 1.3


def linear_range(values: list[float]) -> tuple[float, float]:
    """A linear axis around the values, a tenth of their span (or of their size, or 0.1) each side."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return -1.0, 1.0
    low, high = min(finite), max(finite)
    pad = 0.1 * ((high - low) or abs(high) or 1.0)
    return low - pad, high + pad


def measured(records: list[TrialRecord], method: str, objectives: Objectives = Objectives()) -> list[TrialRecord]:
    return [r for r in records if r.method == method and math.isfinite(objectives.score(r))]


def placeable(record: TrialRecord, cost: str = TRAINABLE_PCT) -> bool:
    """A trial that can be drawn on the accuracy-against-cost plane (a log axis, but a signed cost's linear one): an
    interrupted trial has an accuracy but no parameter count yet."""
    value = getattr(record, cost)
    return math.isfinite(value) and (value > 0 or cost in SIGNED_COSTS)


def confirmed_cost(c, cost: str) -> float:
    return c.trainable_pct if cost == TRAINABLE_PCT else c.costs.get(cost, math.nan)


def confirmed_bars(conf: Confirmation, style: dict[str, Style], cost: str = TRAINABLE_PCT) -> list[ErrorBar]:
    bars = []
    for c in conf.configs:
        x = confirmed_cost(c, cost)
        if not (math.isfinite(c.val.mean) and math.isfinite(x) and x > 0):
            continue
        low, high = (c.val.low, c.val.high) if c.val.known else (c.val.mean, c.val.mean)
        text = (f"<b>{c.method}</b> confirmed over {c.val.n} seeds ({c.failures})<br>val {conf.quality_label} "
                f"{format_interval(c.val)}<br>test {conf.quality_label} {c.test.mean:.3f}<br>search run {c.search_val_score:.3f} (bias "
                f"{format_interval(c.selection_bias, True)})<br>trainable {c.trainable_pct:.4g}%"
                + (f"<br>vs full: {c.verdict}" if c.verdict else "") + f"<br>config {c.config_id}")
        bars.append(ErrorBar(x, c.val.mean, low, high, text, style[c.method], c.method))
    return bars


def pareto(data: SweepData, style: dict[str, Style], cost: str = TRAINABLE_PCT) -> ParetoData:
    """Accuracy against `cost`, every trial drawn (faded: stopped early, failed or over budget), the front marked."""
    objectives = data.summary.objectives
    series = [Series(m, style[m], [Marker(getattr(r, cost), objectives.score(r), hover(r, objectives),
                                          not is_front_candidate(r, objectives)) for r in rows])
              for m in data.methods
              if (rows := [r for r in measured(data.trials, m, objectives) if placeable(r, cost)])]
    reference, floor, conf = data.summary.reference, data.summary.floor, data.summary.confirmation
    front = sorted((getattr(r, cost), objectives.score(r)) for r in data.summary.front)
    reference_line = (Line(reference.val_score, f"best full fine-tune {reference.val_score:.3f}")
                      if reference else None)
    bars, note = [], ""
    if conf is not None:
        bars = confirmed_bars(conf, style, cost)
        means = {c.config_id: c for c in conf.configs}
        front = sorted((confirmed_cost(means[i], cost), means[i].val.mean) for i in conf.front)
        full = means.get(conf.reference) if conf.reference else None
        reference_line = Line(full.val.mean, f"full fine-tune, confirmed mean {full.val.mean:.3f}") if full else None
        note = f"bars: confirmed mean and {conf.confidence:.0%} interval over {len(conf.seeds)} seeds"
    floor_line = None
    if floor:
        least = floor_accuracy(floor, objectives.quality)
        floor_line = Line(least, f"floor ({floor.kind}) {least:.3f}")
    log_x = cost not in SIGNED_COSTS
    xs = [m.x for s in series for m in s.markers] + [b.x for b in bars]
    return ParetoData(series, front, reference_line, floor_line, log_range(xs) if log_x else linear_range(xs), bars,
                      note, cost=cost, x_title=AXIS_TITLES[cost], staircase=objectives.costs == (cost,),
                      front_over=objectives.describe(), y_title=objectives.quality_title, log_x=log_x)


def panels(data: SweepData, style: dict[str, Style]) -> list[Panel]:
    out, objectives = [], data.summary.objectives
    for method in data.methods:
        key = key_hyperparameter(method)
        rows = measured(data.trials, method, objectives)
        markers = [Marker(float(hyperparameters(r).get(key, math.nan)), objectives.score(r), hover(r, objectives),
                          not is_front_candidate(r, objectives)) for r in rows]
        markers = [m for m in markers if math.isfinite(m.x)]
        out.append(Panel(method, key, style[method], markers, log_range([m.x for m in markers]),
                         accuracy_range([m.y for m in markers], objectives.quality_bounds)))
    return out


def hypervolume_history(data: SweepData) -> list[float]:
    """The search's hypervolume after each trial, in start order, measured as the summary's headline is: from the
    floor, over the trials that beat it (the last value is the headline)."""
    by_id = {r.run_id: r for r in data.trials}
    objectives = data.summary.objectives
    reference = floor_accuracy(data.summary.floor, objectives.quality)
    costs_at = data.summary.hv_references or objectives.hv_references(data.trials)
    seen, values = [], []
    for run_id in data.start_order:
        record = by_id[run_id]
        if is_front_candidate(record, objectives):  # hypervolume counts only what lies above the floor
            seen.append(objectives.point(run_id, record))
        values.append(hypervolume(seen, reference, costs_at, objectives.log_axes))
    return values


def parallel(data: SweepData) -> tuple[list[Axis], list[float]]:
    objectives = data.summary.objectives
    records = [r for r in data.trials if math.isfinite(objectives.score(r))]
    codes = {m: float(i) for i, m in enumerate(data.methods)}
    axes = [
        Axis("method", [codes[r.method] for r in records], (list(codes.values()), list(codes))),
        Axis("log10 LR", [math.log10(hyperparameters(r).get("lr", 1e-3)) for r in records]),
        Axis("log10 trainable %", [math.log10(r.trainable_pct) for r in records]),
        Axis("train s", [r.train_seconds for r in records]),
        *[Axis(LABELS[c], [getattr(r, c) for r in records]) for c in data.summary.objectives.costs
          if c not in (TRAINABLE_PCT, TRAIN_SECONDS)],
        Axis(f"val {objectives.quality_label}", [objectives.score(r) for r in records]),
        Axis(f"test {objectives.quality_label}", [objectives.test_score(r) if math.isfinite(objectives.test_score(r))
                                                 else 0.0 for r in records]),
    ]
    return axes, [objectives.score(r) for r in records]


# What people choose a method by: drawn against accuracy in every sweep, whatever its front is over
ALWAYS_DRAWN = (TRAINABLE_PCT, PEAK_MEMORY_MB, TRAIN_SECONDS)


def drawn_costs(objectives: Objectives) -> list[str]:
    """The planes: the cost objectives first (their order), then trainable %, peak memory and training time."""
    return list(dict.fromkeys((*objectives.costs, *ALWAYS_DRAWN)))


def compute(data: SweepData) -> FigureData:
    style = styles(data.methods)
    curves = [Curve(f"{r.method} {r.trainable_pct:.3g}%", style[r.method], data.curves.get(r.run_id, []))
              for r in data.summary.front]
    axes, colour = parallel(data)
    planes = [pareto(data, style, cost) for cost in drawn_costs(data.summary.objectives)]
    return FigureData(data.experiment, planes, data.summary.objectives.quality_title, panels(data, style), curves,
                      hypervolume_history(data), axes, colour)
