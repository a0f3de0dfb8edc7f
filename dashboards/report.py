"""One self-contained HTML report (plotly.js inlined: opens with no network) plus PNGs, logged to the sweep's parent
run so they open inside the MLflow UI."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from peftsweep.dashboards import figures
from peftsweep.dashboards.figure_data import compute
from peftsweep.dashboards.importance import method_importance
from peftsweep.dashboards.static import write_pngs
from peftsweep.dashboards.sweep_data import SweepData, load_sweep
from peftsweep.metric_names import CHECKPOINT_MB, PEAK_MEMORY_MB, TRAIN_SECONDS
from peftsweep.search.results.confirmation import (UNCONFIRMED, Confirmation, format_interval, format_ratio,
                                                   format_verdict)
from peftsweep.search.results.objectives import RATIO_COSTS
from peftsweep.search.results.statistics import Interval, format_p
from peftsweep.search.results.summary import Summary
from peftsweep.search.tracking.front_view import FRONT_FILTER, VIEW_NAME
from peftsweep.search.tracking.client import client_for


@dataclass
class Dashboard:
    html: Path
    pngs: list[Path]
    data: SweepData


def cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td>n/a</td>"
    return f"<td>{format(value, fmt)}</td>"


def interval(i: Interval | None, signed: bool = False) -> str:
    """A mean with its interval, as a cell (written as the console writes it)."""
    return f"<td>{html.escape(format_interval(i, signed))}</td>"


RATIO_HEADS = {PEAK_MEMORY_MB: "memory", TRAIN_SECONDS: "time", CHECKPOINT_MB: "size"}


def comparison_table(data: SweepData) -> str:
    """Best search trial per method; when the sweep was confirmed, each method's best confirmed configuration beside
    it: its mean and interval, its paired gap to the confirmed full fine-tune on test accuracy, the verdict, and its
    memory, time and size over the confirmed full fine-tune's (geometric mean of the per-seed ratios, t-interval)."""
    conf = data.summary.confirmation
    confirmed = {c.method: c for c in conf.by_method} if conf else {}
    level = f"{conf.confidence:.0%}" if conf else ""
    extra = (f"<th>confirmed val ({level} CI)</th><th>confirmed test ({level} CI)</th>"
             f"<th>gap to full, test ({level} CI)</th><th>p (Holm)</th><th>runs</th><th>verdict</th>"
             + "".join(f"<th>confirmed x full {RATIO_HEADS[cost]} ({level} CI)</th>" for cost in RATIO_COSTS)
             if conf else "")
    q = data.summary.objectives.quality_label
    head = (f"<tr><th>method</th><th>val {q}</th><th>test {q}</th><th>trainable %</th><th>gap to best full</th>"
            "<th>x full params</th><th>peak MiB</th><th>x full memory</th><th>train s</th><th>x full time</th>"
            f"<th>checkpoint MiB</th><th>x full size</th><th>run</th>{extra}</tr>")
    rows = ""
    for m in data.summary.by_method:
        ratios = m.ratios_to_full
        row = (f"<tr><td>{html.escape(m.method)}</td>{cell(m.val_score, '.3f')}{cell(m.test_score, '.3f')}"
               f"{cell(m.trainable_pct, '.4g')}{cell(m.accuracy_gap_to_full, '+.3f')}"
               f"{cell(m.param_ratio_to_full, '.2g')}{cell(m.peak_memory_mb, '.0f')}"
               f"{cell(ratios.get(PEAK_MEMORY_MB), '.2g')}{cell(m.train_seconds, '.1f')}"
               f"{cell(ratios.get(TRAIN_SECONDS), '.2g')}{cell(m.checkpoint_mb, '.3g')}"
               f"{cell(ratios.get(CHECKPOINT_MB), '.2g')}<td><code>{m.best_run_id[:8]}</code></td>")
        if conf:
            c = confirmed.get(m.method)
            gap = c.gap_test.difference if c and c.gap_test else None
            verdict = ("reference" if c and c.config_id == conf.reference else format_verdict(c) if c and c.verdict
                       else "not confirmed")
            p = format_p(c.gap_test.p_adjusted) if c and c.gap_test else ""
            row += (f"{interval(c.val if c else None)}{interval(c.test if c else None)}{interval(gap, True)}"
                    f"<td>{p}</td><td>{html.escape(c.failures) if c else ''}</td>"
                    f"<td class=\"verdict\">{html.escape(verdict)}</td>"
                    + "".join(f"<td>{html.escape(format_ratio(c.ratios_to_full.get(cost) if c else None))}</td>"
                              for cost in RATIO_COSTS))
        rows += row + "</tr>"
    return f'<table id="comparison"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def confirmed_table(conf: Confirmation) -> str:
    level = f"{conf.confidence:.0%}"
    head = (f"<tr><th>method</th><th>config</th><th>why</th><th>trainable %</th><th>runs</th>"
            f"<th>val {conf.quality_label} ({level} CI)</th><th>test {conf.quality_label} ({level} CI)</th>"
            f"<th>search run val</th>"
            f"<th>selection bias ({level} CI)</th><th>on the front</th></tr>")
    rows = "".join(
        f"<tr><td>{html.escape(c.method)}</td><td><code>{html.escape(c.config_id)}</code></td>"
        f"<td>{html.escape(', '.join(c.reasons))}</td>{cell(c.trainable_pct, '.4g')}<td>{html.escape(c.failures)}</td>"
        f"{interval(c.val)}{interval(c.test)}{cell(c.search_val_score, '.3f')}{interval(c.selection_bias, True)}"
        f"<td>{'yes' if c.on_front else ''}</td></tr>" for c in conf.configs)
    return f'<table id="confirmed"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def confirmation_section(data: SweepData) -> str:
    conf = data.summary.confirmation
    if conf is None:
        return section("Confirmation", "", html.escape(UNCONFIRMED) + ".")
    note = (f"Each configuration re-trained with {len(conf.seeds)} new seeds ({', '.join(map(str, conf.seeds))}); "
            f"means and {conf.confidence:.0%} t-intervals from these runs alone, the front taken on the means. "
            f"{conf.runs} confirm runs, {conf.failed} failed (runs: failed in training of those that ended). "
            f"Selection bias: the search run's validation {conf.quality_label} minus its confirmed mean; "
            f"{conf.selection_bias:+.3f} on average.")
    return section("Confirmed over seeds", confirmed_table(conf), html.escape(note))


def comparison_note(data: SweepData) -> str:
    note = f"Best search trial per method ({data.summary.objectives.quality_title})."
    if data.summary.confirmation:
        conf = data.summary.confirmation
        note += (" Confirmed: each method's configuration as the search chose it (its best search run); its gap to "
                 "the full fine-tune the search chose is paired over the shared seeds, on test accuracy (the "
                 f"configurations were chosen on validation); p-values Holm-adjusted over {conf.comparisons} "
                 f"comparisons; equivalent: within +-{conf.rules.margin:g} by two one-sided tests.")
    return note


def section(title: str, body: str, note: str = "") -> str:
    return f"<section><h2>{html.escape(title)}</h2>{f'<p>{note}</p>' if note else ''}{body}</section>"


def render(data: SweepData, drawn) -> str:
    """The HTML page; `drawn`: the figures' data (dashboards.figure_data), also drawn to the PNGs."""
    scores = method_importance(data)
    parts, first = [], True
    planes = [(f"pareto-{plane.cost}" if i else "pareto", figures.pareto(plane)) for i, plane in enumerate(drawn.planes)]
    for div_id, fig in (*planes, ("per-method", figures.per_method(drawn)),
                        ("learning-curves", figures.learning_curves(drawn)), ("parallel", figures.parallel(drawn)),
                        ("hypervolume", figures.hypervolume_curve(drawn)), ("importance", figures.importance(scores))):
        parts.append((div_id, fig.to_html(full_html=False, include_plotlyjs=first, div_id=div_id)))
        first = False
    plots = dict(parts)
    c = data.summary.counts
    importance_note = "" if scores else "Not enough completed trials per method (4 or more) to estimate importance."
    f = data.summary.floor
    o = data.summary.objectives
    floor = (f"<br>Floor ({html.escape(f.kind)}, nothing trained): {o.quality_title} {f.value(o.quality):.3f}, test "
             f"{f.value(o.test_quality):.3f}; {data.summary.below_floor} completed trial(s) did not beat it."
             if f else "")
    not_run = f", {c['not_run']} not run (over the memory budget by the plan)" if c.get("not_run") else ""
    budget = (f"<br>Budgets: {data.summary.over_budget} completed trial(s) over budget, drawn faded, never on the "
              f"front." if data.summary.objectives.budgets else "")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>peftsweep: {html.escape(data.experiment)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}section{{margin:2em 0}}code{{font-size:90%}}</style></head><body>
<h1>peftsweep — {html.escape(data.experiment)}</h1>
<p>{c['total']} trials: {c['completed']} completed, {c['early_stopped']} stopped early, {c['failed']} failed{not_run}.
Front over {html.escape(data.summary.objectives.describe())}: {len(data.summary.front)} trials; hypervolume
{data.summary.hypervolume:.4f}.{floor}{budget}
MLflow: <code>{html.escape(data.tracking_uri)}</code>, parent run <code>{data.parent_run_id}</code>; the front alone:
MLflow's saved view <i>{html.escape(VIEW_NAME)}</i> (runs page, Views), or search <code>{html.escape(FRONT_FILTER)}</code>.</p>
{section("Pareto front", "".join(plots[div_id] for div_id, _ in planes))}
{confirmation_section(data)}
{section("PEFT against full fine-tuning", comparison_table(data), comparison_note(data))}
{section("Per method", plots["per-method"])}
{section("Learning curves of the front", plots["learning-curves"])}
{section("All trials", plots["parallel"])}
{section("Search progress", plots["hypervolume"])}
{section("Hyperparameter importance", plots["importance"], importance_note)}
</body></html>"""


def build_dashboard(tracking_uri: str, experiment: str, out: Path, log_to_mlflow: bool = True,
                    parent_run_id: str | None = None, summary: Summary | None = None) -> Dashboard:
    """`summary`: the sweep's, when the caller has just computed it (`run`); else computed from MLflow."""
    data = load_sweep(tracking_uri, experiment, parent_run_id, summary)
    drawn = compute(data)  # once, for the HTML and the PNGs
    out.mkdir(parents=True, exist_ok=True)
    page = out / "dashboard.html"
    page.write_text(render(data, drawn))
    pngs = write_pngs(drawn, out)
    if log_to_mlflow:
        client = client_for(tracking_uri)
        for path in [page, *pngs]:
            client.log_artifact(data.parent_run_id, str(path), "dashboard")
    return Dashboard(page, pngs, data)
