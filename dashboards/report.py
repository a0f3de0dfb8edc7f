"""One self-contained HTML report (plotly.js inlined: opens with no network) plus PNGs, logged to the sweep's parent
run so they open inside the MLflow UI."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from peftsweep.dashboards import figures
from peftsweep.dashboards.figure_data import compute
from peftsweep.dashboards.importance import method_importance
from peftsweep.dashboards.static import write_pngs
from peftsweep.dashboards.sweep_data import SweepData, load_sweep
from peftsweep.search.summary import Summary
from peftsweep.search.front_view import FRONT_FILTER, VIEW_NAME


@dataclass
class Dashboard:
    html: Path
    pngs: list[Path]
    data: SweepData


def cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td>n/a</td>"
    return f"<td>{format(value, fmt)}</td>"


def comparison_table(data: SweepData) -> str:
    head = ("<tr><th>method</th><th>val acc</th><th>test acc</th><th>trainable %</th><th>gap to best full</th>"
            "<th>x full params</th><th>train s</th><th>peak MB</th><th>run</th></tr>")
    rows = "".join(
        f"<tr><td>{html.escape(m.method)}</td>{cell(m.val_accuracy, '.3f')}{cell(m.test_accuracy, '.3f')}"
        f"{cell(m.trainable_pct, '.4g')}{cell(m.accuracy_gap_to_full, '+.3f')}{cell(m.param_ratio_to_full, '.2g')}"
        f"{cell(m.train_seconds, '.1f')}{cell(m.peak_memory_mb, '.0f')}<td><code>{m.best_run_id[:8]}</code></td></tr>"
        for m in data.summary.by_method)
    return f'<table id="comparison"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def section(title: str, body: str, note: str = "") -> str:
    return f"<section><h2>{html.escape(title)}</h2>{f'<p>{note}</p>' if note else ''}{body}</section>"


def render(data: SweepData, drawn) -> str:
    """The HTML page; `drawn`: the figures' data (dashboards.figure_data), also drawn to the PNGs."""
    scores = method_importance(data)
    parts, first = [], True
    for div_id, fig in (("pareto", figures.pareto(drawn)), ("per-method", figures.per_method(drawn)),
                        ("learning-curves", figures.learning_curves(drawn)), ("parallel", figures.parallel(drawn)),
                        ("hypervolume", figures.hypervolume_curve(drawn)), ("importance", figures.importance(scores))):
        parts.append((div_id, fig.to_html(full_html=False, include_plotlyjs=first, div_id=div_id)))
        first = False
    plots = dict(parts)
    c = data.summary.counts
    importance_note = "" if scores else "Not enough completed trials per method (4 or more) to estimate importance."
    f = data.summary.floor
    floor = (f"<br>Floor ({html.escape(f.kind)}, nothing trained): validation accuracy {f.val_accuracy:.3f}, test "
             f"{f.test_accuracy:.3f}; {data.summary.below_floor} completed trial(s) did not beat it." if f else "")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>peftsweep: {html.escape(data.experiment)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}section{{margin:2em 0}}code{{font-size:90%}}</style></head><body>
<h1>peftsweep — {html.escape(data.experiment)}</h1>
<p>{c['total']} trials: {c['completed']} completed, {c['early_stopped']} stopped early, {c['failed']} failed.
Front: {len(data.summary.front)} trials; hypervolume {data.summary.hypervolume:.4f}.{floor}
MLflow: <code>{html.escape(data.tracking_uri)}</code>, parent run <code>{data.parent_run_id}</code>; the front alone:
MLflow's saved view <i>{html.escape(VIEW_NAME)}</i> (runs page, Views), or search <code>{html.escape(FRONT_FILTER)}</code>.</p>
{section("Pareto front", plots["pareto"])}
{section("PEFT against full fine-tuning", comparison_table(data), "Best trial per method (validation accuracy).")}
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
        client = MlflowClient(tracking_uri=tracking_uri)
        for path in [page, *pngs]:
            client.log_artifact(data.parent_run_id, str(path), "dashboard")
    return Dashboard(page, pngs, data)
