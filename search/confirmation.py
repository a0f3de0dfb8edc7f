"""The confirm stage's verdicts, computed from its runs alone: which configurations are confirmed, their means and
intervals over seeds, the front on the means, PEFT against full fine-tuning (paired over the shared seeds) and the
selection bias of the search. Pure functions of records; no MLflow, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peftsweep.search.pareto import Point, hypervolume, pareto_front
from peftsweep.search.records import Floor, TrialRecord
from peftsweep.search.statistics import (ACCURACY_BOUNDS, Interval, PairedDifference, mean_interval,
                                         paired_difference)

# Confirm seeds are this far apart (and from the search's): each epoch is seeded with seed + epoch, so seeds 1 apart
# would share the data order of shifted epochs.
SEED_STEP = 1000
FRONT, BEST_FULL, BEST_OF_METHOD = "front", "best full", "best of its method"


def confirm_seeds(search_seed: int, count: int) -> list[int]:
    """The seeds of the confirm runs: never the search's, the same for every configuration (so that runs pair up by
    seed), and a prefix of a longer list (confirming with more seeds later adds runs, it does not redo them)."""
    return [search_seed + SEED_STEP * (i + 1) for i in range(count)]


@dataclass(frozen=True)
class Selected:
    """A configuration to confirm: the search trial that found it, and why it matters."""

    config_id: str  # the search trial's id
    run_id: str  # its MLflow run
    method: str
    params: dict[str, str]  # as logged (MLflow strings)
    reasons: tuple[str, ...]


def select_configurations(front: list[TrialRecord], best_by_method: dict[str, TrialRecord],
                          references: set[str], best_per_method: bool) -> list[Selected]:
    """Every front member and the best trial of the reference method (full fine-tuning); with `best_per_method`,
    the best trial of every method too. In that order, each configuration once, with all its reasons."""
    chosen: dict[str, tuple[TrialRecord, list[str]]] = {}

    def add(record: TrialRecord, reason: str) -> None:
        chosen.setdefault(record.trial_id, (record, []))[1].append(reason)

    for record in front:
        add(record, FRONT)
    for method, record in sorted(best_by_method.items()):
        if method in references:
            add(record, BEST_FULL)
        elif best_per_method:
            add(record, BEST_OF_METHOD)
    return [Selected(r.trial_id, r.run_id, r.method, dict(r.params), tuple(reasons))
            for r, reasons in chosen.values()]


@dataclass
class ConfirmedConfig:
    config_id: str
    search_run_id: str
    method: str
    params: dict[str, str]
    reasons: list[str]
    trainable_pct: float
    trainable_params: float
    search_val_accuracy: float  # the accuracy it was selected with (one run, the search seed)
    val: Interval  # over its confirm runs
    test: Interval
    seeds: list[int]  # of its completed confirm runs
    failed: int  # confirm runs that failed
    selection_bias: float  # search val accuracy minus the confirmed mean
    gap_val: PairedDifference | None = None  # to the confirmed full fine-tune (None: it is that, or there is none)
    gap_test: PairedDifference | None = None
    # Against full fine-tuning, on test accuracy: the configurations were chosen on validation accuracy, so test is
    # the only split that neither the search nor the selection has looked at.
    verdict: str | None = None
    on_front: bool = False  # on the front of the means


@dataclass
class Confirmation:
    seeds: list[int]
    confidence: float
    configs: list[ConfirmedConfig]  # cheapest first
    front: list[str]  # config ids on the front of the means, cheapest first
    hypervolume: float  # of the front of the means
    reference: str | None  # the confirmed full fine-tune's config id
    selection_bias: float  # mean over the configurations with a confirmed mean
    runs: int  # confirm runs, all statuses
    unfinished: int = 0  # confirm runs not yet completed or failed (an interrupted confirm stage)
    by_method: list[ConfirmedConfig] = field(default_factory=list)  # each method's best confirmed configuration

    def config(self, config_id: str) -> ConfirmedConfig | None:
        return next((c for c in self.configs if c.config_id == config_id), None)


def by_seed(records: list[TrialRecord], metric: str) -> dict[int, float]:
    return {r.seed: getattr(r, metric) for r in records if r.seed is not None and r.status == "completed"}


def confirm(search: list[TrialRecord], repeats: list[TrialRecord], references: set[str], floor: Floor | None = None,
            confidence: float = 0.95) -> Confirmation | None:
    """`search`: the search stage's records; `repeats`: the confirm stage's. None when nothing was confirmed. Only
    completed confirm runs count; the search run of a configuration never enters its mean."""
    if not repeats:
        return None
    trials = {r.trial_id: r for r in search}
    grouped: dict[str, list[TrialRecord]] = {}
    for r in repeats:
        grouped.setdefault(r.config_id, []).append(r)
    configs = []
    for config_id, runs in grouped.items():
        origin = trials.get(config_id)
        done = [r for r in runs if r.status == "completed"]
        val = mean_interval([r.val_accuracy for r in done], confidence, ACCURACY_BOUNDS)
        pct = next((r.trainable_pct for r in done if math.isfinite(r.trainable_pct)),
                   origin.trainable_pct if origin else math.nan)
        params = next((r.trainable_params for r in done if math.isfinite(r.trainable_params)),
                      origin.trainable_params if origin else math.nan)
        search_val = origin.val_accuracy if origin else math.nan
        reasons = sorted({reason for r in runs for reason in r.params.get("selected_as", "").split(",") if reason})
        configs.append(ConfirmedConfig(
            config_id=config_id, search_run_id=origin.run_id if origin else "", method=runs[0].method,
            params=dict(origin.params) if origin else dict(runs[0].params), reasons=reasons, trainable_pct=pct,
            trainable_params=params, search_val_accuracy=search_val, val=val,
            test=mean_interval([r.test_accuracy for r in done], confidence, ACCURACY_BOUNDS),
            seeds=sorted(r.seed for r in done if r.seed is not None),
            failed=sum(1 for r in runs if r.status == "failed"), selection_bias=search_val - val.mean))
    configs.sort(key=lambda c: (c.trainable_pct if math.isfinite(c.trainable_pct) else math.inf, c.config_id))
    points = [Point(c.config_id, c.val.mean, c.trainable_pct) for c in configs
              if math.isfinite(c.val.mean) and (floor is None or c.val.mean > floor.val_accuracy)]
    front = [p.id for p in pareto_front(points)]
    ranked = sorted((c for c in configs if math.isfinite(c.val.mean)), key=lambda c: (-c.val.mean, c.trainable_pct))
    reference = next((c for c in ranked if c.method in references), None)
    by_method: dict[str, ConfirmedConfig] = {}
    for c in ranked:
        by_method.setdefault(c.method, c)
        c.on_front = c.config_id in front
        if reference is not None and c is not reference:
            pair = [grouped[reference.config_id], grouped[c.config_id]]
            c.gap_val = paired_difference(by_seed(pair[1], "val_accuracy"), by_seed(pair[0], "val_accuracy"),
                                          confidence)
            c.gap_test = paired_difference(by_seed(pair[1], "test_accuracy"), by_seed(pair[0], "test_accuracy"),
                                           confidence)
            c.verdict = c.gap_test.verdict
    biases = [c.selection_bias for c in configs if math.isfinite(c.selection_bias)]
    finished = ("completed", "failed")
    return Confirmation(
        seeds=sorted({r.seed for r in repeats if r.seed is not None}), confidence=confidence, configs=configs,
        front=front, hypervolume=hypervolume(points), reference=reference.config_id if reference else None,
        selection_bias=math.fsum(biases) / len(biases) if biases else math.nan, runs=len(repeats),
        unfinished=sum(1 for r in repeats if r.status not in finished),
        by_method=sorted(by_method.values(), key=lambda c: c.method))


UNCONFIRMED = ("The front is unconfirmed: one run per configuration, with the search's seed (confirm.seeds re-trains "
               "the configurations that matter with new seeds and gives means, intervals and verdicts)")


def format_interval(i: Interval | None, signed: bool = False) -> str:
    """A mean with its interval, the one way the console, the CSV and the dashboard write it: `0.812 [0.790, 0.834]`;
    `0.812 (1 run: no interval)` when the spread is not known; `n/a` without a value."""
    f = "+.3f" if signed else ".3f"
    if i is None or not math.isfinite(i.mean):
        return "n/a"
    bounds = f" [{i.low:{f}}, {i.high:{f}}]" if i.known else f" ({i.n} run{'s' if i.n != 1 else ''}: no interval)"
    return f"{i.mean:{f}}{bounds}"


def format_confirmation(conf: Confirmation | None) -> list[str]:
    """The printed summary's confirmation section (or the line saying there is none)."""
    if conf is None:
        return [UNCONFIRMED]
    level = f"{conf.confidence:.0%}"
    pending = f"; {conf.unfinished} run(s) unfinished (continue with --resume)" if conf.unfinished else ""
    lines = [f"Confirmed over {len(conf.seeds)} new seeds ({', '.join(map(str, conf.seeds))}): mean [{level} "
             f"t-interval] of {conf.runs} confirm runs{pending}; front on the means (*), hypervolume "
             f"{conf.hypervolume:.4f}:",
             f"  {'method':<9} {'config':<12} {'trainable %':>11} {'val acc':>22} {'test acc':>22} {'search val':>10} "
             f"{'bias':>7} {'runs':>4}"]
    for c in conf.configs:
        mark = "*" if c.on_front else " "
        lines.append(f"{mark} {c.method:<9} {c.config_id[-12:]:<12} {c.trainable_pct:>11.4g} {format_interval(c.val):>22} "
                     f"{format_interval(c.test):>22} {c.search_val_accuracy:>10.3f} {c.selection_bias:>+7.3f} {c.val.n:>4}")
    reference = conf.config(conf.reference) if conf.reference else None
    if reference is None:
        lines.append("PEFT vs full fine-tuning: no confirmed full fine-tune to compare with")
    else:
        lines += [f"PEFT vs full fine-tuning (each method's best confirmed configuration minus the full fine-tune's "
                  f"{reference.test.mean:.3f} test, paired over the shared seeds; verdict on test accuracy):",
                  f"  {'method':<9} {'gap val':>24} {'gap test':>24}  verdict"]
        for c in conf.by_method:
            if c is reference or c.gap_test is None:
                continue
            lines.append(f"  {c.method:<9} {format_interval(c.gap_val.difference, True):>24} "
                         f"{format_interval(c.gap_test.difference, True):>24}  {c.verdict}")
    lines.append(f"Selection bias (search run's val accuracy minus its confirmed mean): {conf.selection_bias:+.3f} on "
                 f"average over {sum(1 for c in conf.configs if math.isfinite(c.selection_bias))} configurations")
    return lines
