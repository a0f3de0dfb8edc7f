"""What a sweep's front is over (`objectives:`) and the budgets a trial must keep to be on it (`constraints:`).

The quality first (maximized), then one to three costs (minimized). A trial over a budget is infeasible: it never
joins the front, the searcher learns it as a violated constraint, and it is shown as such. Pure: no Ray, no MLflow;
values are read from a Tune result (a dict) or a trial record (attributes of the metrics' names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from peftsweep.metric_names import (CHECKPOINT_MB, FORGETTING, METRICS, PEAK_MEMORY_MB, PLANNED_MIN_MEMORY_MB, TRAIN_SECONDS,
                                    TRAINABLE_PCT, VAL_ACCURACY, VAL_MACRO_F1, VAL_MCC, WORKER_SECONDS)
from peftsweep.search.results.pareto import HV_REFERENCE_PCT, Point

# A trial's result key when it was not run (its budget could not be kept: the memory plan said so), with the reason
NOT_RUN = "not_run"
# The names a config writes for the quality (`metric:`, the first objective), and the validation metric each one is
# (generation's accuracy is exact match of the answer: `exact_match` names it too)
QUALITIES = {"accuracy": VAL_ACCURACY, "exact_match": VAL_ACCURACY, "macro_f1": VAL_MACRO_F1, "mcc": VAL_MCC}
# The costs a front may be over and a budget may cap, as the config writes them (each a metric's name)
COSTS = (TRAINABLE_PCT, PEAK_MEMORY_MB, TRAIN_SECONDS, WORKER_SECONDS, CHECKPOINT_MB, FORGETTING)
# Costs that can be 0 or below (forgetting: a model may predict general text better than its base): drawn and
# measured on linear axes, not on log ones like the others
SIGNED_COSTS = (FORGETTING,)
MAX_COSTS = 3
# How each cost is shown: a column header and an axis title
LABELS = {VAL_ACCURACY: "val acc", VAL_MACRO_F1: "val macro-F1", VAL_MCC: "val MCC", TRAINABLE_PCT: "trainable %", PEAK_MEMORY_MB: "peak MiB",
          TRAIN_SECONDS: "train s", WORKER_SECONDS: "worker-s", CHECKPOINT_MB: "ckpt MiB", FORGETTING: FORGETTING}
AXIS_TITLES = {TRAINABLE_PCT: "trainable parameters (% of the base model, log)",
               PEAK_MEMORY_MB: "peak memory of the worst rank (MiB, log)", TRAIN_SECONDS: "training seconds (log)",
               WORKER_SECONDS: "worker-seconds (log)", CHECKPOINT_MB: "checkpoint size on disk (MiB, log)",
               FORGETTING: "forgetting (loss on general text minus the base's, nats per token)"}
# What people choose a method by: shown in every front table, and given as ratios to the best full fine-tune's
RATIO_COSTS = (PEAK_MEMORY_MB, TRAIN_SECONDS, CHECKPOINT_MB)
# Costs that grow with the epochs trained: a result of a trial stopped early is projected to the planned epochs
# before it is checked against a budget (the searcher is told what the whole trial would have cost).
GROWS_WITH_EPOCHS = (TRAIN_SECONDS, WORKER_SECONDS)


def worker_seconds(result: Mapping[str, Any]) -> float:
    """A result's worker-seconds as the driver sees it: the time Tune has run the trial times its workers (what the
    trial logger logs is the same over every driver that ran it)."""
    seconds, workers = result.get("time_total_s"), result.get("num_workers")
    if isinstance(seconds, (int, float)) and isinstance(workers, (int, float)) and workers > 0:
        return float(seconds) * float(workers)
    return math.nan


def value_of(source: Mapping[str, Any] | Any, name: str) -> float:
    """The metric `name` of a Tune result (a dict) or a record (attributes); NaN when it is missing."""
    if isinstance(source, Mapping):
        value = source.get(name)
        if value is None and name == WORKER_SECONDS:
            return worker_seconds(source)
    else:
        value = getattr(source, name, None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass(frozen=True)
class Objectives:
    quality: str = VAL_ACCURACY
    costs: tuple[str, ...] = (TRAINABLE_PCT,)
    budgets: tuple[tuple[str, float], ...] = ()  # (cost, the most a feasible trial may have), as the config says

    @classmethod
    def from_config(cls, objectives: list[str], constraints: Mapping[str, float]) -> Objectives:
        """Budgets in COSTS order, whatever order the config (or MLflow's JSON) wrote them in."""
        budgets = tuple(sorted(constraints.items(), key=lambda item: COSTS.index(item[0])))
        return cls(QUALITIES[objectives[0]], tuple(objectives[1:]), budgets)

    @property
    def test_quality(self) -> str:
        """The quality's metric on the test split (val_mcc -> test_mcc)."""
        return "test_" + self.quality.removeprefix("val_")

    @property
    def quality_bounds(self) -> tuple[float, float]:
        """Where the quality can lie (an interval is clipped to it): [-1, 1] for MCC, [0, 1] otherwise."""
        return (-1.0, 1.0) if self.quality == VAL_MCC else (0.0, 1.0)

    @property
    def quality_title(self) -> str:
        """`validation accuracy`, `validation macro-F1`, `validation MCC`: an axis title."""
        return "validation " + ("accuracy" if self.quality == VAL_ACCURACY else self.quality_label)

    @property
    def quality_label(self) -> str:
        """`acc`, `macro-F1`, `MCC`: the quality's short name, for column headers (`val <it>`, `test <it>`)."""
        return LABELS[self.quality].removeprefix("val ")

    def score(self, source: Mapping[str, Any] | Any) -> float:
        """The quality's validation value of a result or record."""
        return value_of(source, self.quality)

    def test_score(self, source: Mapping[str, Any] | Any) -> float:
        return value_of(source, self.test_quality)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.quality, *self.costs)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(METRICS[name].better for name in self.names)

    @property
    def default(self) -> bool:
        return self == Objectives()

    def describe(self) -> str:
        """`val accuracy (max), trainable % (min)`: what the front is over, for titles and tags."""
        parts = [f"{LABELS[self.quality]} (max)"] + [f"{LABELS[c]} (min)" for c in self.costs]
        budgets = [f"{LABELS[c]} <= {limit:g}" for c, limit in self.budgets]
        return ", ".join(parts) + (f"; budgets {', '.join(budgets)}" if budgets else "")

    def point(self, id: str, source: Mapping[str, Any] | Any) -> Point:
        return Point(id, value_of(source, self.quality), tuple(value_of(source, c) for c in self.costs))

    def budget_values(self, source: Mapping[str, Any] | Any,
                      planned_epochs: int | None = None) -> list[tuple[str, float, float]]:
        """(cost, budget, value) per budget; with `planned_epochs`, a result of fewer epochs has its time costs
        projected to them (what the whole trial would have cost)."""
        out = []
        epoch = value_of(source, "epoch")
        for cost, limit in self.budgets:
            value = value_of(source, cost)
            if cost == PEAK_MEMORY_MB and not math.isfinite(value):  # not run: the plan's least memory stands in
                value = value_of(source, PLANNED_MIN_MEMORY_MB)
            if planned_epochs and cost in GROWS_WITH_EPOCHS and 0 < epoch < planned_epochs:
                value *= planned_epochs / epoch
            out.append((cost, limit, value))
        return out

    def over_budget(self, source: Mapping[str, Any] | Any, planned_epochs: int | None = None) -> list[str]:
        """The budgets `source` breaks, as `peak_memory_mb 2345 > 2000`. An unmeasured cost breaks none."""
        return [f"{cost} {value:.4g} > {limit:g}" for cost, limit, value in self.budget_values(source, planned_epochs)
                if math.isfinite(value) and value > limit]

    def violations(self, source: Mapping[str, Any] | Any, planned_epochs: int | None = None) -> dict[str, float]:
        """Optuna's constraint values (`Trial.set_constraint`), one per budget: value minus budget (<= 0: kept); 0
        when not measured (Optuna refuses NaN)."""
        return {cost: value - limit if math.isfinite(value) else 0.0
                for cost, limit, value in self.budget_values(source, planned_epochs)}

    @property
    def log_axes(self) -> tuple[bool, ...]:
        """Per cost: measured (hypervolume) and drawn on a log axis; a signed cost (forgetting) on a linear one."""
        return tuple(cost not in SIGNED_COSTS for cost in self.costs)

    def hv_references(self, sources: list[Any]) -> tuple[float, ...]:
        """The hypervolume's reference per cost: 1000 % for trainable % (fixed: fronts of any two sweeps compare),
        a decade above the costliest of `sources` for the others (the sweep's trials: a front's volume compares
        within its sweep); a signed cost: the worst of `sources` plus the span of them (or 1 when they are one)."""
        out = []
        for cost in self.costs:
            if cost == TRAINABLE_PCT:
                out.append(HV_REFERENCE_PCT)
                continue
            if cost in SIGNED_COSTS:
                values = [v for s in sources if math.isfinite(v := value_of(s, cost))]
                span = (max(values) - min(values)) if values else 0.0
                out.append(max(values) + (span or 1.0) if values else 1.0)
                continue
            values = [v for s in sources if math.isfinite(v := value_of(s, cost)) and v > 0]
            out.append(10 * max(values) if values else 1.0)
        return tuple(out)
