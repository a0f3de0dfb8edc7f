"""Everything a dashboard shows, read from MLflow alone: the sweep's trials, its summary, learning curves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftsweep.search.results.records import TrialRecord
from peftsweep.search.results.summary import Summary
from peftsweep.search.tracking.client import client_for, latest_sweep
from peftsweep.search.tracking.runs import summarize_sweep
from peftsweep.spaces import REGISTRY, IntParam


@dataclass
class SweepData:
    experiment: str
    tracking_uri: str
    parent_run_id: str
    summary: Summary
    start_order: list[str]  # run ids by start time
    curves: dict[str, list[tuple[int, float]]]  # run id -> (epoch, its validation quality) for front members

    @property
    def trials(self) -> list[TrialRecord]:
        return self.summary.trials

    @property
    def methods(self) -> list[str]:
        return sorted({r.method for r in self.trials})


def load_sweep(tracking_uri: str, experiment: str, parent_run_id: str | None = None,
               summary: Summary | None = None) -> SweepData:
    """The sweep with that parent run, or the experiment's newest sweep; its summary is computed unless given."""
    client = client_for(tracking_uri)
    if parent_run_id:
        experiment_id = client.get_run(parent_run_id).info.experiment_id
    else:
        experiment_id, parent_run_id = latest_sweep(client, experiment)
    if summary is None:
        summary = summarize_sweep(client, experiment_id, parent_run_id)
    curves = {r.run_id: sorted((m.step, m.value) for m in client.get_metric_history(r.run_id, summary.objectives.quality))
              for r in summary.front}
    # start times as the summary read them (a call per run here cost 71 s for 1,000 runs on a tracking server)
    start_order = [r.run_id for r in sorted(summary.trials, key=lambda r: r.start_time)]
    return SweepData(experiment, tracking_uri, parent_run_id, summary, start_order, curves)


def hyperparameters(record: TrialRecord) -> dict[str, Any]:
    """The trial's own hyperparameters, typed again from MLflow's strings by the registry's declarations."""
    spec = REGISTRY.get(record.method)
    return spec.parse(record.params) if spec else {}


def key_hyperparameter(method: str) -> str:
    """The number that sizes the method (its first declared size parameter: r, virtual tokens, bottleneck), else the
    learning rate."""
    spec = REGISTRY.get(method)
    if spec is None:
        return "lr"
    sizes = [k for k, p in spec.params.items() if isinstance(p, IntParam) and p.size and p.when is None]
    return sizes[0] if sizes else "lr"
