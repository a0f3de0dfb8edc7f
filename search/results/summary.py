"""The sweep's summary, computed from MLflow runs alone: Pareto front, hypervolume, best trial per method, PEFT vs full.

`summarize` is pure (records in, summary out); reading runs, tagging the front and writing files are separate steps.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from peftsweep.metric_names import BENCHMARK_PREFIX, FORGETTING, GPU_SECONDS, TEST_ACCURACY, TRAINABLE_PCT, VAL_ACCURACY, WORKER_SECONDS
from peftsweep.search.results.confirmation import Confirmation, VerdictRules, confirm, format_confirmation, format_interval
from peftsweep.search.results.objectives import LABELS, RATIO_COSTS, Objectives
from peftsweep.search.results.pareto import hypervolume, pareto_front
from peftsweep.search.results.records import (CONFIRM, RECORD_METRICS, SEARCH, Floor, TrialRecord, beats_floor,
                                              best_of, floor_accuracy, is_front_candidate, of_stage)

STATUSES = ("completed", "early_stopped", "failed", "interrupted", "running", "not_run")  # a record's, counted


@dataclass
class MethodComparison:
    method: str
    best_run_id: str
    val_score: float  # the quality (`metric:`) of its best trial, on validation and test
    test_score: float
    trainable_pct: float
    # to the best trial of the reference method (full fine-tuning: `MethodSpec.reference`)
    accuracy_gap_to_full: float | None  # its validation quality minus the best full fine-tune's
    param_ratio_to_full: float | None  # trainable % over the best full fine-tune's
    train_seconds: float
    peak_memory_mb: float
    worker_seconds: float = math.nan
    checkpoint_mb: float = math.nan
    # each of RATIO_COSTS over the best full fine-tune's (None: no full fine-tune, or a cost not measured)
    ratios_to_full: dict[str, float | None] = field(default_factory=dict)
    over_budget: str = ""  # every trial of the method broke a budget: this best one broke these
    forgetting: float = math.nan  # `forgetting:`: its general-text loss minus its base's
    forgetting_vs_full: float | None = None  # its forgetting minus the best full fine-tune's (< 0: forgets less)


@dataclass
class Summary:
    trials: list[TrialRecord]
    front: list[TrialRecord]
    hypervolume: float
    by_method: list[MethodComparison]
    counts: dict[str, int] = field(default_factory=dict)
    reference_method: str | None = None  # the method PEFT is compared against, when the sweep trained it
    floor: Floor | None = None
    below_floor: int = 0  # completed trials whose validation accuracy did not beat the floor
    repeats: list[TrialRecord] = field(default_factory=list)  # the confirm stage's runs
    confirmation: Confirmation | None = None  # None: the front is unconfirmed (one run per configuration)
    objectives: Objectives = Objectives()  # what the front is over, and the budgets
    over_budget: int = 0  # completed search trials that broke a budget (never on the front)
    hv_references: tuple[float, ...] = ()  # the hypervolume's reference per cost (search.results.objectives)
    base_benchmarks: dict[str, float] = field(default_factory=dict)  # `evaluate.lm_eval`: the base model's scores

    @property
    def compute(self) -> dict[str, float]:
        """Worker-seconds (and GPU-seconds, when there were GPUs) the trials' Train jobs held, by stage and in all;
        trials that never reported have none to count."""
        def total(records: list[TrialRecord], metric: str) -> float:
            return math.fsum(v for r in records if math.isfinite(v := getattr(r, metric)))

        out = {"search_worker_seconds": total(self.trials, WORKER_SECONDS),
               "confirm_worker_seconds": total(self.repeats, WORKER_SECONDS)}
        out["total_worker_seconds"] = out["search_worker_seconds"] + out["confirm_worker_seconds"]
        gpu = total(self.trials + self.repeats, GPU_SECONDS)
        return out | ({"total_gpu_seconds": gpu} if gpu else {})

    @property
    def front_configs(self) -> set[str]:
        """The configurations on the front that counts: the front of the confirmed means when the sweep was confirmed
        (a configuration's search run and its confirm runs alike), else the search's front."""
        if self.confirmation is not None:
            return set(self.confirmation.front)
        return {r.config_id for r in self.front}

    @property
    def reference(self) -> MethodComparison | None:
        """The reference method's best trial (the best full fine-tune), if it has one that completed."""
        return next((m for m in self.by_method if m.method == self.reference_method), None)


def reference_methods() -> set[str]:
    """The registry's reference methods (read here, so that `summarize` stays a pure function of its arguments)."""
    from peftsweep.spaces import REGISTRY

    return {name for name, spec in REGISTRY.items() if spec.reference}


def summarize(records: list[TrialRecord], references: set[str] | None = None,
              floor: Floor | None = None, rules: VerdictRules = VerdictRules(),
              objectives: Objectives = Objectives()) -> Summary:
    """`records`: the sweep's runs, of both stages. `references`: the methods PEFT is compared against (default: the
    registry's). `floor`: the accuracy with nothing trained; it dominates every trial that does not beat it (it has
    fewer trainable parameters: none), so those never join the front. The search's front and comparison come from the
    search runs; the confirmation (means, intervals and verdicts by `rules`) from the confirm runs alone. The
    hypervolume is measured from the floor (0 without one), so only volume above it counts. The front and the
    hypervolume are over `objectives`; a trial over one of its budgets is marked (`over_budget`) and never joins the
    front, nor is it any method's best. The records are not changed: the summary holds copies with `on_front` and
    `over_budget` set."""
    references = reference_methods() if references is None else references
    repeats = [replace(r, over_budget=", ".join(objectives.over_budget(r))) for r in of_stage(records, CONFIRM)]
    records = [replace(r, over_budget=", ".join(objectives.over_budget(r))) for r in of_stage(records, SEARCH)]
    completed = [r for r in records if r.status == "completed" and objectives.point(r.run_id, r).usable]
    feasible = [r for r in completed if is_front_candidate(r, objectives)]
    candidates = [r for r in feasible if beats_floor(objectives.score(r), floor, objectives.quality)]
    points = [objectives.point(r.run_id, r) for r in candidates]
    front_ids = [p.id for p in pareto_front(points)]
    records = [replace(r, on_front=r.run_id in front_ids) for r in records]
    by_id = {r.run_id: r for r in records}
    # The reference is the best full fine-tune whatever the budgets (what PEFT is compared with, kept or not); each
    # method's best is its best trial that kept them, or, when none did, its best over budget (marked so).
    unbudgeted = replace(objectives, budgets=())
    full = best_of([r for r in records if r.method in references], unbudgeted)
    by_method = []
    for method in sorted({r.method for r in records}):
        of_method = [r for r in records if r.method == method]
        best = best_of(of_method, objectives) or best_of(of_method, unbudgeted)
        if best is None:
            continue
        by_method.append(MethodComparison(
            method=method, best_run_id=best.run_id, val_score=objectives.score(best),
            test_score=objectives.test_score(best), trainable_pct=best.trainable_pct,
            accuracy_gap_to_full=(objectives.score(best) - objectives.score(full)) if full else None,
            param_ratio_to_full=(best.trainable_pct / full.trainable_pct) if full else None,
            train_seconds=best.train_seconds, peak_memory_mb=best.peak_memory_mb, worker_seconds=best.worker_seconds,
            checkpoint_mb=best.checkpoint_mb, over_budget=best.over_budget,
            ratios_to_full={c: _ratio(getattr(best, c), getattr(full, c)) if full else None for c in RATIO_COSTS},
            forgetting=best.forgetting, forgetting_vs_full=_difference(best.forgetting, full.forgetting) if full else None))
    counts = {s: sum(1 for r in records if r.status == s) for s in STATUSES}
    references_hv = objectives.hv_references(records)
    return Summary(trials=records, front=[by_id[i] for i in front_ids],
                   hypervolume=hypervolume(points, floor_accuracy(floor, objectives.quality), references_hv,
                                           objectives.log_axes),
                   by_method=by_method, counts=counts | {"total": len(records)},
                   reference_method=full.method if full else None, floor=floor,
                   below_floor=len(feasible) - len(candidates), repeats=repeats,
                   confirmation=confirm(records, repeats, references, floor, rules, objectives, references_hv),
                   objectives=objectives, over_budget=len(completed) - len(feasible), hv_references=references_hv)


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if math.isfinite(value) and math.isfinite(reference) and reference > 0 else None


def write_files(summary: Summary, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = directory / "summary.json", directory / "trials.csv"
    json_path.write_text(json.dumps(as_dict(summary), indent=2))
    records = summary.trials + summary.repeats
    benchmarks = sorted({name for r in records for name in r.benchmarks})  # a column per lm-eval score, if any
    fields = ["run_id", "trial_id", "stage", "config_id", "seed", "method", "status", "on_front", *RECORD_METRICS,
              *benchmarks, "failure", "over_budget", "start_time", "params"]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in records:
            row = {k: v for k, v in asdict(r).items() if k != "benchmarks"}
            writer.writerow(row | r.benchmarks | {"params": json.dumps(r.params)})
    if summary.confirmation:
        write_confirmed_csv(summary.confirmation, directory / CONFIRMED_CSV)
    return json_path, csv_path


CONFIRMED_CSV = "confirmed.csv"  # one row per confirmed configuration


def write_confirmed_csv(conf: Confirmation, path: Path) -> None:
    fields = ["config_id", "method", "reasons", TRAINABLE_PCT, "runs", "failed", "failed_training", "failures",
              "val_mean", "val_low", "val_high", "val_interval", "test_mean", "test_low", "test_high", "test_interval",
              "search_val_score", "selection_bias", "selection_bias_low", "selection_bias_high",
              "on_confirmed_front", "gap_val", "gap_val_low", "gap_val_high", "gap_test", "gap_test_low",
              "gap_test_high", "gap_test_p", "gap_test_p_holm", "gap_test_p_equivalence_holm", "comparisons", "verdict",
              "seeds_to_decide", *[f"x_full_{cost}{end}" for cost in RATIO_COSTS for end in ("", "_low", "_high")],
              "params"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for c in conf.configs:
            gaps = {}
            for name, gap in (("gap_val", c.gap_val), ("gap_test", c.gap_test)):
                d = gap.difference if gap else None
                gaps |= {name: d.mean if d else "", f"{name}_low": d.low if d else "",
                         f"{name}_high": d.high if d else ""}
            t = c.gap_test
            writer.writerow({"config_id": c.config_id, "method": c.method, "reasons": ",".join(c.reasons),
                             TRAINABLE_PCT: c.trainable_pct, "runs": c.attempted, "failed": c.failed,
                             "failed_training": c.failed_training, "failures": c.failures,
                             "val_mean": c.val.mean, "val_low": c.val.low, "val_high": c.val.high,
                             "val_interval": format_interval(c.val), "test_mean": c.test.mean,
                             "test_low": c.test.low, "test_high": c.test.high, "test_interval": format_interval(c.test),
                             "search_val_score": c.search_val_score, "selection_bias": c.selection_bias.mean,
                             "selection_bias_low": c.selection_bias.low, "selection_bias_high": c.selection_bias.high,
                             "on_confirmed_front": c.on_front, "gap_test_p": t.p_value if t else "",
                             "gap_test_p_holm": t.p_adjusted if t else "",
                             "gap_test_p_equivalence_holm": t.p_equivalence_adjusted if t else "",
                             "comparisons": t.comparisons if t else "", "verdict": c.verdict or "",
                             "seeds_to_decide": c.seeds_to_decide if c.seeds_to_decide is not None else "",
                             "params": json.dumps(c.params)} | gaps | _ratio_cells(c))


def _ratio_cells(c) -> dict[str, Any]:
    """A confirmed configuration's cost ratios to the full fine-tune (empty for the reference itself)."""
    out = {}
    for cost in RATIO_COSTS:
        ratio = c.ratios_to_full.get(cost)
        out |= {f"x_full_{cost}": ratio.mean if ratio else "", f"x_full_{cost}_low": ratio.low if ratio else "",
                f"x_full_{cost}_high": ratio.high if ratio else ""}
    return out


def as_dict(summary: Summary) -> dict[str, Any]:
    """Plain data, strict-JSON safe: a metric a failed trial never reached is None, not NaN."""
    f = summary.floor  # its kind and its value of every metric it was measured in
    floor = {"kind": f.kind, VAL_ACCURACY: f.val_accuracy, TEST_ACCURACY: f.test_accuracy, **dict(f.scores)} \
        if f else None
    return _finite({"objectives": list(summary.objectives.names),
                    "constraints": dict(summary.objectives.budgets), "over_budget": summary.over_budget,
                    "hypervolume": summary.hypervolume, "hypervolume_references": list(summary.hv_references),
                    "counts": summary.counts, "compute": summary.compute, "floor": floor,
                    "below_floor": summary.below_floor, "base_benchmarks": summary.base_benchmarks,
                    "front": [asdict(r) for r in summary.front], "by_method": [asdict(m) for m in summary.by_method],
                    "trials": [asdict(r) for r in summary.trials],
                    "confirmed": _confirmed_dict(summary.confirmation) if summary.confirmation else None,
                    "confirm_runs": [asdict(r) for r in summary.repeats]})


def _confirmed_dict(conf: Confirmation) -> dict[str, Any]:
    """The confirmation as data, each configuration with its `failures` line (`failed k of n`) beside its means."""
    out = asdict(conf)
    for row, c in zip(out["configs"], conf.configs):
        row["failures"] = c.failures
    for row, c in zip(out["by_method"], conf.by_method):
        row["failures"] = c.failures
    return out | {"comparisons": conf.comparisons, "failed": conf.failed}


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _unfinished(counts: dict[str, int]) -> str:
    n = counts.get("interrupted", 0) + counts.get("running", 0)
    return f", {n} unfinished" if n else ""


def format_table(summary: Summary) -> str:
    c, objectives = summary.counts, summary.objectives
    val, test = f"val {objectives.quality_label}", f"test {objectives.quality_label}"
    # trainable % has its own column; peak memory, training time and checkpoint size are always shown beside it
    forgets = any(math.isfinite(r.forgetting) for r in summary.trials)  # measured (`forgetting:`): shown too
    extra = list(dict.fromkeys(cost for cost in (*objectives.costs, *RATIO_COSTS, *[FORGETTING] * forgets)
                               if cost != TRAINABLE_PCT))
    lines = [f"trials: {c['total']} ({c['completed']} completed, {c['early_stopped']} stopped early, "
             f"{c['failed']} failed{_unfinished(c)}"
             + (f", {c['not_run']} not run: over the memory budget by the plan" if c["not_run"] else "") + ")",
             *_floor_line(summary), *_budget_line(summary), *_compute_line(summary),
             f"Pareto front ({objectives.describe().split(';')[0]}), hypervolume {summary.hypervolume:.4f}"
             f"{_from(summary)}:",
             f"  {'method':<9} {'trainable %':>11} {'params':>10} "
             + "".join(f"{LABELS[cost]:>10} " for cost in extra) + f"{val:>8} {test:>8}  hyperparameters"]
    for r in summary.front:
        hp = ", ".join(f"{k}={_short(v)}" for k, v in r.params.items() if k != "method" and k in _method_keys(r))
        lines.append(f"  {r.method:<9} {r.trainable_pct:>11.4g} {r.trainable_params:>10.0f} "
                     + "".join(f"{getattr(r, cost):>10.4g} " for cost in extra)
                     + f"{objectives.score(r):>8.3f} {objectives.test_score(r):>8.3f}  {hp}")
    lines += ["Best trial per method vs the best full fine-tune (x full: the method's best over full fine-tuning's"
              + ("; forgetting: loss on the general text minus the base's, vs full: minus full's" if forgets else "")
              + ("; !: over budget, every trial of the method" if any(m.over_budget for m in summary.by_method)
                 else "") + "):",
              f"  {'method':<9} {val:>8} {test:>8} {'trainable %':>11} {'gap to full':>11} "
              f"{'x params':>9} {'peak MiB':>9} {'x memory':>9} {'train s':>8} {'x time':>7} {'ckpt MiB':>9} "
              f"{'x size':>7}" + (f" {LABELS[FORGETTING]:>10} {'vs full':>8}" if forgets else "")]
    for m in summary.by_method:
        gap = f"{m.accuracy_gap_to_full:+.3f}" if m.accuracy_gap_to_full is not None else "n/a"
        ratios = [_times(m.param_ratio_to_full)] + [_times(m.ratios_to_full.get(cost)) for cost in RATIO_COSTS]
        lines.append(f"{'!' if m.over_budget else ' '} {m.method:<9} {m.val_score:>8.3f} {m.test_score:>8.3f} {m.trainable_pct:>11.4g} "
                     f"{gap:>11} {ratios[0]:>9} {m.peak_memory_mb:>9.0f} {ratios[1]:>9} {m.train_seconds:>8.1f} "
                     f"{ratios[2]:>7} {m.checkpoint_mb:>9.3g} {ratios[3]:>7}"
                     + (f" {m.forgetting:>10.4f} {_signed(m.forgetting_vs_full):>8}" if forgets else ""))
    return "\n".join(lines + format_confirmation(summary.confirmation) + format_benchmarks(summary))


def format_benchmarks(summary: Summary) -> list[str]:
    """`evaluate.lm_eval`: each score of the base model and of every evaluated run of the front's configurations
    (a column per run, the base first), stderr beside it where lm-eval gives one."""
    runs = [r for r in summary.trials + summary.repeats if r.benchmarks]
    names = sorted({k for r in runs for k in r.benchmarks} | set(summary.base_benchmarks))
    scores = [k for k in names if not k.endswith("_stderr")]
    if not scores:
        return []
    columns = [("base", summary.base_benchmarks)] + [
        (f"{r.method}" + (f" s{r.seed}" if r.seed is not None else "") + f" {r.run_id[:6]}", r.benchmarks)
        for r in runs]
    width = max(12, *(len(label) for label, _ in columns))

    def cell(values: dict[str, float], name: str) -> str:
        if name not in values:
            return "n/a"
        err = values.get(name + "_stderr")
        return f"{values[name]:.3f}" + (f" ±{err:.3f}" if err is not None else "")

    lines = ["Standard benchmarks (lm-eval; the front's runs and the base model):",
             f"  {'task/metric':<28} " + " ".join(f"{label:>{width}}" for label, _ in columns)]
    for name in scores:
        lines.append(f"  {name.removeprefix(BENCHMARK_PREFIX):<28} "
                     + " ".join(f"{cell(values, name):>{width}}" for _, values in columns))
    return lines


def _difference(value: float, reference: float) -> float | None:
    return value - reference if math.isfinite(value) and math.isfinite(reference) else None


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2g}"


def _budget_line(summary: Summary) -> list[str]:
    if not summary.objectives.budgets:
        return []
    budgets = ", ".join(f"{cost} <= {limit:g}" for cost, limit in summary.objectives.budgets)
    over = summary.over_budget
    return [f"budgets ({budgets}): {over} completed trial(s) over budget, never on the front" if over
            else f"budgets ({budgets}): every completed trial kept them"]


def _from(summary: Summary) -> str:
    return (f" (from the floor, {floor_accuracy(summary.floor, summary.objectives.quality):.3f})" if summary.floor
            else "")


def _compute_line(summary: Summary) -> list[str]:
    c = summary.compute
    if not c["total_worker_seconds"]:
        return []
    confirm = f" (search {c['search_worker_seconds']:.0f}, confirm {c['confirm_worker_seconds']:.0f})" if summary.repeats \
        else ""
    gpu = f"; {c['total_gpu_seconds']:.0f} GPU-seconds" if "total_gpu_seconds" in c else ""
    return [f"compute: {c['total_worker_seconds']:.0f} worker-seconds{confirm}{gpu}"]


def _floor_line(summary: Summary) -> list[str]:
    f = summary.floor
    if f is None:
        return []
    beaten = f"; {summary.below_floor} completed trial(s) did not beat it" if summary.below_floor else ""
    o = summary.objectives
    return [f"floor ({f.kind}, 0 trainable parameters): val {o.quality_label} {f.value(o.quality):.3f}, test "
            f"{o.quality_label} {f.value(o.test_quality):.3f}{beaten}"]


def _method_keys(record: TrialRecord) -> set[str]:
    from peftsweep.spaces import REGISTRY

    spec = REGISTRY.get(record.method)
    return set(spec.params) if spec else set(record.params)


def _short(value: str) -> str:
    try:
        return f"{float(value):.3g}" if "." in value or "e" in value else value
    except ValueError:
        return value
