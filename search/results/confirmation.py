"""The confirm stage's verdicts, computed from its runs alone: which configurations are confirmed, their means and
intervals over seeds, the front on the means, PEFT against full fine-tuning (paired over the shared seeds) and the
selection bias of the search. Pure functions of records; no MLflow, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peftsweep.metric_names import TRAINABLE_PCT
from peftsweep.search.results.objectives import LABELS, RATIO_COSTS, Objectives
from peftsweep.search.results.pareto import Point, hypervolume, pareto_front
from peftsweep.search.results.records import Floor, TrialRecord, beats_floor, floor_accuracy
from peftsweep.search.results.statistics import (Interval, PairedDifference, format_p, holm,
                                                 is_undecided, mean_interval, paired_difference, ratio_interval,
                                                 seeds_to_decide, single_run_gap)

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


@dataclass(frozen=True)
class VerdictRules:
    """How the confirm stage turns runs into verdicts (the `confirm:` keys; docs/confirm.md)."""

    confidence: float = 0.95
    margin: float = 0.01  # accuracy: a gap within +-margin, shown so, is `equivalent`
    failed_runs: str = "withhold"  # withhold: no verdict for a configuration with a run failed in training | floor
    looks: int = 1  # planned looks at the verdicts (confirm.seeds: auto): alpha is split over them (Bonferroni)


@dataclass
class ConfirmedConfig:
    config_id: str
    search_run_id: str
    method: str
    params: dict[str, str]
    reasons: list[str]
    trainable_pct: float
    trainable_params: float
    search_val_score: float  # the validation quality it was selected with (one run, the search seed)
    val: Interval  # over its confirm runs (failed ones at the floor when the rules say so)
    test: Interval
    seeds: list[int]  # of its completed confirm runs
    attempted: int  # confirm runs that ended (completed or failed)
    failed: int  # confirm runs that failed, whatever the reason
    failed_training: int  # of those, failed in training (a lost worker is not the configuration's fault)
    selection_bias: Interval  # search val accuracy minus the confirmed mean, with its interval
    gap_val: PairedDifference | None = None  # to the confirmed full fine-tune (None: it is that, or there is none)
    gap_test: PairedDifference | None = None
    # Against full fine-tuning, on test accuracy: the configurations were chosen on validation accuracy, so test is
    # the only split that neither the search nor the selection has looked at.
    verdict: str | None = None
    seeds_to_decide: int | None = None  # for an undecided verdict: about how many seeds the observed spread needs
    on_front: bool = False  # on the front of the means
    costs: dict[str, float] = field(default_factory=dict)  # each cost objective's mean over its completed runs
    over_budget: str = ""  # the budgets its means break ("": none): then never on the front
    # each of RATIO_COSTS over the reference's, paired over the shared seeds (geometric mean and interval)
    ratios_to_full: dict[str, Interval] = field(default_factory=dict)

    @property
    def failures(self) -> str:
        """`failed k of n`: runs failed in training of the runs that ended (and those lost to infrastructure)."""
        lost = self.failed - self.failed_training
        return f"failed {self.failed_training} of {self.attempted}" + (f", {lost} lost" if lost else "")

    @property
    def undecided(self) -> bool:
        return is_undecided(self.verdict)


@dataclass
class Confirmation:
    seeds: list[int]
    rules: VerdictRules
    configs: list[ConfirmedConfig]  # cheapest first
    front: list[str]  # config ids on the front of the means, cheapest first
    hypervolume: float  # of the front of the means, from the floor
    reference: str | None  # the confirmed full fine-tune's config id (chosen on the search's results)
    selection_bias: float  # mean over the configurations with a confirmed mean
    runs: int  # confirm runs, all statuses
    unfinished: int = 0  # confirm runs not yet completed or failed (an interrupted confirm stage)
    by_method: list[ConfirmedConfig] = field(default_factory=list)  # each method's configuration chosen by the search
    comparisons: int = 0  # verdicts in the family Holm adjusts over
    quality_label: str = "acc"  # what the means are of (`metric:`): acc, macro-F1, MCC

    @property
    def confidence(self) -> float:
        return self.rules.confidence

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.configs)

    @property
    def compared(self) -> list[ConfirmedConfig]:
        """The configurations compared with the reference (the verdict family), by method then cost."""
        return sorted((c for c in self.configs if c.gap_test is not None),
                      key=lambda c: (c.method, c.trainable_pct, c.config_id))

    def config(self, config_id: str) -> ConfirmedConfig | None:
        return next((c for c in self.configs if c.config_id == config_id), None)


def by_seed(records: list[TrialRecord], metric: str, failed_at: float | None = None) -> dict[int, float]:
    """A metric by seed over the completed runs; with `failed_at`, runs failed in training count at that value."""
    out = {r.seed: getattr(r, metric) for r in records if r.seed is not None and r.status == "completed"}
    if failed_at is not None:
        out |= {r.seed: failed_at for r in records if r.seed is not None and r.failed_in_training}
    return out


def _chosen_by_search(configs: list[ConfirmedConfig]) -> ConfirmedConfig | None:
    """The configuration the search stage would pick: its best search run (not the confirmed means, which the
    verdicts are judged on: choosing on them too would make the gap optimistic)."""
    ranked = sorted((c for c in configs if math.isfinite(c.search_val_score)),
                    key=lambda c: (-c.search_val_score, c.trainable_pct, c.config_id))
    return ranked[0] if ranked else None


def confirm(search: list[TrialRecord], repeats: list[TrialRecord], references: set[str], floor: Floor | None = None,
            rules: VerdictRules = VerdictRules(), objectives: Objectives = Objectives(),
            hv_references: tuple[float, ...] | None = None) -> Confirmation | None:
    """`search`: the search stage's records; `repeats`: the confirm stage's. None when nothing was confirmed. The
    search run of a configuration never enters its mean; a run failed in training is counted (`failed k of n`) and
    withholds the configuration's verdict, or counts at the floor (`rules.failed_runs`). The front of the means is over
    `objectives` (each cost's mean over the completed runs), its hypervolume from `hv_references` (the search's)."""
    if not repeats:
        return None
    trials = {r.trial_id: r for r in search}
    grouped: dict[str, list[TrialRecord]] = {}
    for r in repeats:
        grouped.setdefault(r.config_id, []).append(r)
    at_floor = rules.failed_runs == "floor"
    quality, test_quality = objectives.quality, objectives.test_quality
    bounds = objectives.quality_bounds
    floor_val = floor_accuracy(floor, quality)
    floor_test = floor_accuracy(floor, test_quality)
    configs = []
    for config_id, runs in grouped.items():
        origin = trials.get(config_id)
        done = [r for r in runs if r.status == "completed"]
        failed_training = [r for r in runs if r.failed_in_training]
        vals = [objectives.score(r) for r in done] + ([floor_val] * len(failed_training) if at_floor else [])
        tests = [objectives.test_score(r) for r in done] + ([floor_test] * len(failed_training) if at_floor else [])
        pct = next((r.trainable_pct for r in done if math.isfinite(r.trainable_pct)),
                   origin.trainable_pct if origin else math.nan)
        params = next((r.trainable_params for r in done if math.isfinite(r.trainable_params)),
                      origin.trainable_params if origin else math.nan)
        search_val = objectives.score(origin) if origin else math.nan
        reasons = sorted({reason for r in runs for reason in r.params.get("selected_as", "").split(",") if reason})
        costs = {c: _mean([getattr(r, c) for r in done]) for c in objectives.costs}
        configs.append(ConfirmedConfig(
            config_id=config_id, search_run_id=origin.run_id if origin else "", method=runs[0].method,
            params=dict(origin.params) if origin else dict(runs[0].params), reasons=reasons, trainable_pct=pct,
            trainable_params=params, search_val_score=search_val,
            val=mean_interval(vals, rules.confidence, bounds),
            test=mean_interval(tests, rules.confidence, bounds),
            seeds=sorted(r.seed for r in done if r.seed is not None),
            attempted=sum(1 for r in runs if r.status in ("completed", "failed")),
            failed=sum(1 for r in runs if r.status == "failed"), failed_training=len(failed_training),
            selection_bias=single_run_gap(search_val, vals, rules.confidence),
            costs=costs | {TRAINABLE_PCT: pct} if TRAINABLE_PCT in costs else costs,
            over_budget=", ".join(objectives.over_budget(costs | {TRAINABLE_PCT: pct}))))
    configs.sort(key=lambda c: (c.trainable_pct if math.isfinite(c.trainable_pct) else math.inf, c.config_id))
    points = [point for c in configs if not c.over_budget
              and (point := Point(c.config_id, c.val.mean, tuple(c.costs[k] for k in objectives.costs))).usable
              and beats_floor(c.val.mean, floor, quality)]
    front = [p.id for p in pareto_front(points)]
    reference = _chosen_by_search([c for c in configs if c.method in references])
    by_method = [chosen for method in sorted({c.method for c in configs})
                 if (chosen := _chosen_by_search([c for c in configs if c.method == method])) is not None]
    for c in configs:
        c.on_front = c.config_id in front
        if reference is not None and c is not reference:
            runs, ref_runs = grouped[c.config_id], grouped[reference.config_id]
            val_at, test_at = (floor_val, floor_test) if at_floor else (None, None)
            c.gap_val = paired_difference(by_seed(runs, quality, val_at), by_seed(ref_runs, quality, val_at),
                                          rules.confidence, rules.margin)
            c.gap_test = paired_difference(by_seed(runs, test_quality, test_at),
                                           by_seed(ref_runs, test_quality, test_at), rules.confidence, rules.margin)
            c.ratios_to_full = {cost: ratio_interval(by_seed(runs, cost), by_seed(ref_runs, cost), rules.confidence)
                                for cost in RATIO_COSTS}
    compared = sorted((c for c in configs if c.gap_test is not None), key=lambda c: c.config_id)
    adjusted = holm([c.gap_test for c in compared], rules.confidence, rules.looks)
    comparisons = adjusted[0].comparisons if adjusted else 0
    for c, gap in zip(compared, adjusted):
        c.gap_test = gap
        c.verdict = gap.verdict
        if not at_floor and (c.failed_training or reference.failed_training):
            who = c if c.failed_training else reference
            whose = "its" if who is c else "the full fine-tune's"
            c.verdict = f"withheld: {whose} runs {who.failures} in training"
        elif is_undecided(c.verdict):
            c.seeds_to_decide = seeds_to_decide(gap, rules.confidence, comparisons, rules.looks)
    biases = [c.selection_bias.mean for c in configs if math.isfinite(c.selection_bias.mean)]
    finished = ("completed", "failed")
    return Confirmation(
        seeds=sorted({r.seed for r in repeats if r.seed is not None}), rules=rules, configs=configs,
        front=front, hypervolume=hypervolume(points, floor_accuracy(floor, quality),
                                             hv_references or objectives.hv_references(repeats),
                                             objectives.log_axes),
        reference=reference.config_id if reference else None,
        selection_bias=math.fsum(biases) / len(biases) if biases else math.nan, runs=len(repeats),
        unfinished=sum(1 for r in repeats if r.status not in finished), by_method=by_method, comparisons=comparisons,
        quality_label=objectives.quality_label)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


UNCONFIRMED = ("The front is unconfirmed: one run per configuration, with the search's seed (confirm.seeds re-trains "
               "the configurations that matter with new seeds and gives means, intervals and verdicts)")


def format_interval(i: Interval | None, signed: bool = False) -> str:
    """A mean with its interval, the one way the console, the CSV and the dashboard write it: `0.812 [0.790, 0.834]`;
    `0.812 (1 run: no interval)` or `0.900 (3 runs, all equal: no interval)` when the spread is not known; `n/a`
    without a value."""
    f = "+.3f" if signed else ".3f"
    if i is None or not math.isfinite(i.mean):
        return "n/a"
    if i.known:
        return f"{i.mean:{f}} [{i.low:{f}}, {i.high:{f}}]"
    why = "1 run" if i.n == 1 else f"{i.n} runs, all equal"
    return f"{i.mean:{f}} ({why}: no interval)"


def format_ratio(i: Interval | None) -> str:
    """A ratio with its interval: `0.52 [0.49, 0.55]`, `0.52 (1 run: no interval)`, `n/a`."""
    if i is None or not math.isfinite(i.mean):
        return "n/a"
    if i.known:
        return f"{i.mean:.3g} [{i.low:.3g}, {i.high:.3g}]"
    return f"{i.mean:.3g} ({'1 pair' if i.n == 1 else f'{i.n} pairs, all equal'}: no interval)"


def format_verdict(c: ConfirmedConfig) -> str:
    """The verdict as printed, with the seeds an undecided one would need."""
    if c.verdict is None:
        return "n/a"
    if c.undecided and c.seeds_to_decide is not None:
        return f"{c.verdict} (~{c.seeds_to_decide} seeds would decide at this spread)"
    return c.verdict


def format_confirmation(conf: Confirmation | None) -> list[str]:
    """The printed summary's confirmation section (or the line saying there is none)."""
    if conf is None:
        return [UNCONFIRMED]
    rules, level = conf.rules, f"{conf.confidence:.0%}"
    pending = f"; {conf.unfinished} run(s) unfinished (continue with --resume)" if conf.unfinished else ""
    failed = f"; {conf.failed} failed" if conf.failed else ""
    extra = [cost for c in conf.configs[:1] for cost in c.costs if cost != TRAINABLE_PCT]  # the other cost objectives
    over = "; over budget (!): never on the front" if any(c.over_budget for c in conf.configs) else ""
    lines = [f"Confirmed over {len(conf.seeds)} new seeds ({', '.join(map(str, conf.seeds))}): mean [{level} "
             f"t-interval] of {conf.runs} confirm runs{failed}{pending}; front on the means (*), hypervolume "
             f"{conf.hypervolume:.4f}{over}:",
             f"  {'method':<9} {'config':<12} {'trainable %':>11} " + "".join(f"{LABELS[k]:>10} " for k in extra)
             + f"{'val ' + conf.quality_label:>22} {'test ' + conf.quality_label:>22} {'search val':>10} "
             f"{'selection bias':>24}  runs"]
    for c in conf.configs:
        mark = "*" if c.on_front else "!" if c.over_budget else " "
        runs = f"{c.attempted}" if not c.failed else c.failures
        lines.append(f"{mark} {c.method:<9} {c.config_id[-12:]:<12} {c.trainable_pct:>11.4g} "
                     + "".join(f"{c.costs.get(k, math.nan):>10.4g} " for k in extra)
                     + f"{format_interval(c.val):>22} {format_interval(c.test):>22} {c.search_val_score:>10.3f} "
                     f"{format_interval(c.selection_bias, True):>24}  {runs}")
    reference = conf.config(conf.reference) if conf.reference else None
    if reference is None:
        lines.append("PEFT vs full fine-tuning: no confirmed full fine-tune to compare with")
    else:
        at_floor = " (runs failed in training count at the floor)" if rules.failed_runs == "floor" else ""
        looks = f", alpha split over {rules.looks} looks" if rules.looks > 1 else ""
        lines += [f"PEFT vs full fine-tuning (each configuration minus the full fine-tune {reference.config_id[-12:]} "
                  f"chosen by the search, {format_interval(reference.test)} test; paired t over the shared seeds; "
                  f"verdict on test {conf.quality_label}, Holm-adjusted over {conf.comparisons} comparison"
                  f"{'s' if conf.comparisons != 1 else ''}{looks}; equivalent = within +-{rules.margin:g} by two "
                  f"one-sided tests){at_floor}:",
                  f"  {'method':<9} {'config':<12} {'gap val':>24} {'gap test':>24} {'p (Holm)':>8}  verdict"]
        for c in conf.compared:
            lines.append(f"  {c.method:<9} {c.config_id[-12:]:<12} {format_interval(c.gap_val.difference, True):>24} "
                         f"{format_interval(c.gap_test.difference, True):>24} {format_p(c.gap_test.p_adjusted):>8}  "
                         f"{format_verdict(c)}")
        lines += [f"Costs over the full fine-tune's (geometric mean of the per-seed ratios [{level} t-interval on their "
                  f"logs], paired over the shared seeds):",
                  f"  {'method':<9} {'config':<12} " + " ".join(f"{'x ' + LABELS[cost]:>26}" for cost in RATIO_COSTS)]
        for c in conf.compared:
            lines.append(f"  {c.method:<9} {c.config_id[-12:]:<12} "
                         + " ".join(f"{format_ratio(c.ratios_to_full.get(cost)):>26}" for cost in RATIO_COSTS))
    lines.append(f"Selection bias (search run's val {conf.quality_label} minus its confirmed mean): {conf.selection_bias:+.3f} on "
                 f"average over {sum(1 for c in conf.configs if math.isfinite(c.selection_bias.mean))} "
                 f"configurations (the reference and each method's configuration are chosen on the search's runs)")
    return lines
