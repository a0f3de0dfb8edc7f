"""A sweep read back from MLflow: its trial records, the floor and verdict rules its parent run logged, the front
tagged on its runs, and the summary of it all (one function for every command that summarizes a sweep)."""

from __future__ import annotations

import math

from peftsweep.metric_names import BENCHMARK_PREFIX
from peftsweep.search.results.records import RECORD_METRICS, SEARCH, Floor, TrialRecord
from peftsweep.search.results.summary import Summary, summarize
from peftsweep.search.tracking.client import (CONFIG_TAG, FAILURE_TAG, METHOD_TAG, OVER_BUDGET_TAG, PARETO_TAG,
                                              SEED_TAG, STAGE_TAG, STATUS_TAG, TRIAL_TAG, trial_runs)


FLOOR_TAG = "peftsweep.floor"  # on the parent run: what the floor is (Floor.kind)
FLOOR_METRICS = ("floor_val_accuracy", "floor_test_accuracy")  # on the parent run


def logged_floor(client, parent_run_id: str) -> Floor | None:
    """The floor a sweep logged on its parent run (for a resumed sweep, the dashboard), if it did."""
    run = client.get_run(parent_run_id)
    metrics, kind = run.data.metrics, run.data.tags.get(FLOOR_TAG)
    if kind is None or not all(k in metrics for k in FLOOR_METRICS):
        return None
    others = tuple(sorted((k.removeprefix("floor_"), v) for k, v in metrics.items()
                          if k.startswith("floor_") and k not in FLOOR_METRICS))  # floor_val_mcc, ...
    return Floor(kind, metrics[FLOOR_METRICS[0]], metrics[FLOOR_METRICS[1]], others)


def logged_rules(client, parent_run_id: str):
    """The verdict rules the sweep was configured with (its confirm.* params; the defaults for what it did not log)."""
    from peftsweep.search.results.confirmation import VerdictRules

    params, default = client.get_run(parent_run_id).data.params, VerdictRules()

    def number(key: str, fallback: float, kind=float):
        try:
            return kind(params[key]) if key in params else fallback
        except ValueError:
            return fallback
    failed = params.get("confirm_failed_runs", default.failed_runs)
    return VerdictRules(confidence=number("confirm_confidence", default.confidence),
                        margin=number("confirm_margin", default.margin),
                        failed_runs=failed if failed in ("withhold", "floor") else default.failed_runs,
                        looks=number("confirm_looks", default.looks, int))


def logged_objectives(client, parent_run_id: str):
    """The objectives and budgets the sweep was configured with (its `objectives` and `constraints` params); the
    default objectives for a sweep from before they existed."""
    import json

    from peftsweep.search.results.objectives import Objectives

    params = client.get_run(parent_run_id).data.params
    if "objectives" not in params:
        return Objectives()
    return Objectives.from_config(params["objectives"].split(","), json.loads(params.get("constraints") or "{}"))


def record_from_run(run) -> TrialRecord:
    metrics, tags = run.data.metrics, run.data.tags
    status = tags.get(STATUS_TAG) or ("failed" if run.info.status == "FAILED" else "running")
    trial_id = tags.get(TRIAL_TAG, "")
    seed = tags.get(SEED_TAG)
    return TrialRecord(run_id=run.info.run_id, trial_id=trial_id, method=tags.get(METHOD_TAG, "?"),
                       status=status, params=dict(run.data.params),
                       **{k: float(metrics.get(k, math.nan)) for k in RECORD_METRICS},
                       stage=tags.get(STAGE_TAG, SEARCH), config_id=tags.get(CONFIG_TAG, trial_id),
                       seed=int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
                       failure=tags.get(FAILURE_TAG, ""), benchmarks=benchmark_scores(metrics),
                       start_time=run.info.start_time or 0)


def benchmark_scores(metrics: dict[str, float]) -> dict[str, float]:
    """A run's lm-eval scores (`evaluate.lm_eval`): its metrics named lm_eval/<task>/<metric>."""
    return {k: v for k, v in sorted(metrics.items()) if k.startswith(BENCHMARK_PREFIX)}


def load_records(client, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """Every child run of the sweep, of both stages."""
    return [record_from_run(run) for run in trial_runs(client, experiment_id, parent_run_id)]




def summarize_sweep(client, experiment_id: str, parent_run_id: str, metric: str | None = None) -> Summary:
    """The sweep's summary from MLflow alone: its runs, with the floor, the verdict rules and the objectives its parent
    run logged; `metric` (a name `metric:` takes): on that quality instead of the one the sweep searched."""
    from dataclasses import replace

    from peftsweep.search.results.objectives import QUALITIES

    objectives = logged_objectives(client, parent_run_id)
    if metric is not None:
        objectives = replace(objectives, quality=QUALITIES[metric])
    summary = summarize(load_records(client, experiment_id, parent_run_id), floor=logged_floor(client, parent_run_id),
                        rules=logged_rules(client, parent_run_id), objectives=objectives)
    summary.base_benchmarks = benchmark_scores(client.get_run(parent_run_id).data.metrics)
    return summary


def tag_front(client, summary: Summary) -> None:
    """`peftsweep.pareto` on every run: "true" on the runs of the configurations on the front that counts
    (`Summary.front_configs`), "false" on every other run; with budgets, `peftsweep.over_budget` on every completed
    run: the budgets it broke, or "" (kept them all)."""
    front = summary.front_configs
    for r in summary.trials + summary.repeats:
        client.set_tag(r.run_id, PARETO_TAG, "true" if r.config_id in front else "false")
        if summary.objectives.budgets and r.status == "completed":
            client.set_tag(r.run_id, OVER_BUDGET_TAG, r.over_budget)
