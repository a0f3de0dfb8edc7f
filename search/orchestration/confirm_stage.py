"""The confirm stage: after the search, the configurations that matter are trained again with new seeds, as trials of
the same sweep (Ray Train jobs, resources, failure handling and --resume as for any trial), each its own MLflow child
run tagged with its stage and the configuration it repeats. `peftsweep confirm` runs it again on a finished sweep
with more seeds; only the (configuration, seed) pairs without a completed run are trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune

from peftsweep.search import storage
from peftsweep.search.config import AUTO_BATCH_SEEDS
from peftsweep.search.results.confirmation import Confirmation, Selected, confirm_seeds, select_configurations
from peftsweep.search.orchestration.progress import ProgressPrinter
from peftsweep.search.points import repeat_point
from peftsweep.search.results.summary import Summary, reference_methods
from peftsweep.search.tracking.client import STATUS_TAG
from peftsweep.search.tracking.trial_logger import MlflowTrialLogger, finite_metrics
from peftsweep.search.orchestration.train_jobs import EndTrainJobs
from peftsweep.spaces import REGISTRY

CONFIRM_RETRIES = 1  # a failed confirm run is tried again once (see confirm_tuner)
VERDICT_TAG = "peftsweep.verdict"  # on a confirmed configuration's search run; on the parent, one per method
FRONT_KIND_TAG = "peftsweep.front"  # on the parent run: confirmed | unconfirmed
CONFIRM_FAILED_TAG = "peftsweep.confirm_failed"  # on a confirmed configuration's search run: `failed k of n`


@dataclass
class ConfirmWork:
    """What a confirm pass trains: the configurations, the seeds every one of them gets, and the points (one per
    configuration and seed without a completed run)."""

    selected: list[Selected]
    seeds: list[int]
    points: list[dict[str, Any]]
    discard: list[str]  # run ids of unfinished confirm runs whose pairs are trained again


def tune_path_for(search_tune_path: str, seeds: int) -> str:
    """The confirm pass's Tune experiment directory, beside the search's: the same pass (same seed count) always gets
    the same directory, so that a pass interrupted is continued rather than started again."""
    return storage.join(storage.parent_of(search_tune_path), f"{storage.name_of(search_tune_path)}-confirm-to{seeds}")


def plan_work(summary: Summary, search_seed: int, seeds: int, best_per_method: bool,
              only: set[str] | None = None) -> ConfirmWork:
    """The pairs still to train, from the sweep's summary: the configurations the search's front and comparison
    select, plus any that earlier passes confirmed (confirming with more seeds later keeps them all); with `only`,
    just those configurations (`confirm.seeds: auto` adding seeds to the undecided ones)."""
    by_run = {r.run_id: r for r in summary.trials}
    best = {m.method: by_run[m.best_run_id] for m in summary.by_method if m.best_run_id in by_run}
    selected = select_configurations(summary.front, best, reference_methods(), best_per_method)
    chosen = {s.config_id for s in selected}
    earlier = summary.confirmation.configs if summary.confirmation else []
    selected += [Selected(c.config_id, c.search_run_id, c.method, dict(c.params), tuple(c.reasons))
                 for c in earlier if c.config_id not in chosen and c.search_run_id]
    if only is not None:
        selected = [s for s in selected if s.config_id in only]
    wanted = confirm_seeds(search_seed, seeds)
    finished = {(r.config_id, r.seed) for r in summary.repeats if r.status in ("completed", "failed")}
    points = []
    for s in selected:
        hparams = REGISTRY[s.method].parse(s.params)
        points += [repeat_point(s.method, hparams, seed, s.config_id, s.run_id, ",".join(s.reasons))
                   for seed in wanted if (s.config_id, seed) not in finished]
    unfinished = [r.run_id for r in summary.repeats if r.status not in ("completed", "failed")]
    return ConfirmWork(selected, wanted, points, unfinished)


def next_look(conf: Confirmation | None, seeds: int, max_seeds: int) -> tuple[int, set[str]] | None:
    """`confirm.seeds: auto`: after a pass at `seeds` seeds, the next one: (seeds, the configurations to give them:
    those with an undecided verdict and the reference they are paired with), or None when every verdict is decided
    (or withheld) or `max_seeds` is reached."""
    if conf is None or conf.reference is None or seeds >= max_seeds:
        return None
    undecided = {c.config_id for c in conf.compared if c.undecided}
    if not undecided:
        return None
    return min(seeds + AUTO_BATCH_SEEDS, max_seeds), undecided | {conf.reference}


def discard_runs(client, run_ids: list[str]) -> None:
    """Unfinished confirm runs of an earlier pass that cannot be continued: their pairs are trained again in new runs,
    so these are deleted (MLflow's soft delete) rather than left as duplicates."""
    for run_id in run_ids:
        client.set_tag(run_id, STATUS_TAG, "discarded")
        client.delete_run(run_id)


def confirm_tuner(trainable, tune_path: str, points: list[dict[str, Any]], logger: MlflowTrialLogger,
                  max_concurrent: int, epochs: int) -> tune.Tuner:
    """The confirm pass's Tuner: every point once (a grid), no searcher, no early stopping (a confirm run is only
    worth its full training), no time budget (the budget bounds the search)."""
    name = storage.name_of(tune_path)
    end_jobs = EndTrainJobs(name, None)
    return tune.Tuner(
        trainable, param_space={"point": tune.grid_search(points)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent, reuse_actors=True),
        # A run that failed is tried once more with the same seed: one that lost its worker, node or trial actor
        # deserves it; one that failed in training fails again at once (its marker, trainers.faults) and counts.
        run_config=tune.RunConfig(name=name, storage_path=storage.parent_of(tune_path), verbose=0, stop=end_jobs,
                                  failure_config=tune.FailureConfig(max_failures=CONFIRM_RETRIES),
                                  callbacks=[ProgressPrinter(len(points), epochs, label="confirm"), logger, end_jobs]))


def log_confirmation(client, parent_run_id: str, summary: Summary) -> None:
    """The confirmation on the parent run (metrics, a verdict tag per method) and on each confirmed configuration's
    search run (its confirmed means and intervals, selection bias and verdict)."""
    conf: Confirmation | None = summary.confirmation
    client.set_tag(parent_run_id, FRONT_KIND_TAG, "confirmed" if conf else "unconfirmed")
    if conf is None:
        return
    metrics = {"confirm_seeds": len(conf.seeds), "confirmed_configs": len(conf.configs),
               "confirmed_front_size": len(conf.front), "confirmed_hypervolume": conf.hypervolume,
               "selection_bias_mean": conf.selection_bias, "confirm_failed": conf.failed,
               "verdict_comparisons": conf.comparisons}
    for c in conf.by_method:
        if c.gap_test is not None and c.gap_test.difference.known:
            d = c.gap_test.difference
            metrics |= {f"gap_to_full_test.{c.method}": d.mean, f"gap_to_full_test_low.{c.method}": d.low,
                        f"gap_to_full_test_high.{c.method}": d.high,
                        f"gap_to_full_test_p_holm.{c.method}": c.gap_test.p_adjusted}
        if c.verdict:
            client.set_tag(parent_run_id, f"{VERDICT_TAG}.{c.method}", c.verdict)
    _log_metrics(client, parent_run_id, metrics)
    for c in conf.configs:
        if not c.search_run_id:
            continue
        _log_metrics(client, c.search_run_id, {
            "confirmed_val_accuracy": c.val.mean, "confirmed_val_low": c.val.low, "confirmed_val_high": c.val.high,
            "confirmed_test_accuracy": c.test.mean, "confirmed_test_low": c.test.low,
            "confirmed_test_high": c.test.high, "selection_bias": c.selection_bias.mean,
            "selection_bias_low": c.selection_bias.low, "selection_bias_high": c.selection_bias.high,
            "confirm_runs": c.attempted, "confirm_failed": c.failed, "confirm_failed_training": c.failed_training})
        client.set_tag(c.search_run_id, CONFIRM_FAILED_TAG, c.failures)
        if c.verdict:
            client.set_tag(c.search_run_id, VERDICT_TAG, c.verdict)


def _log_metrics(client, run_id: str, metrics: dict[str, float]) -> None:
    client.log_batch(run_id, metrics=finite_metrics(metrics, tuple(metrics), 0))
