"""Warm start: the finished trials of earlier sweeps seed a new sweep's searcher, as completed Optuna trials with
their values in this sweep's objectives (and their budgets' violations, when it has budgets), so that a repeated or
extended sweep does not learn again what the last one found. A trial not measured in one of the objectives (a sweep
from before that metric was logged) is left out.

A source is an MLflow experiment (its newest sweep), optionally in another tracking store. Its config (logged on
its parent run) must have the same model, task, data, training settings and methods' search space as this sweep,
unless the source says `allow_mismatch: true`. Trials are replayed through this sweep's own define-by-run space, so
they are registered with exactly the distributions the searcher uses; a trial outside today's ranges is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from peftsweep.errors import UserError
from peftsweep.search.config import SweepConfig
from peftsweep.search.tracking.runs import load_records
from peftsweep.search.orchestration.resume import config_changes
from peftsweep.search.orchestration.space import define_space
from peftsweep.search.points import flat
from peftsweep.search.results.objectives import Objectives
from peftsweep.search.results.records import SEARCH
from peftsweep.search.tracking.client import client_for, latest_sweep, logged_config
from peftsweep.spaces import REGISTRY, MethodSpec

COMPARED = ("model", "task", "data", "train", "methods")  # what must match, unless allow_mismatch


@dataclass
class WarmStart:
    trials: list = field(default_factory=list)  # optuna FrozenTrials, completed, values in the sweep's objectives
    lines: list[str] = field(default_factory=list)  # what was taken in, for the console

    @property
    def methods(self) -> set[str]:
        return {t.params["method"] for t in self.trials}


def replay(method: str, hparams: dict[str, Any], values: tuple[float, ...], methods: dict[str, MethodSpec],
           constraints: dict[str, float] | None = None):
    """The trial as a completed Optuna trial in this sweep's space; None if it does not fit there (a method or a
    value outside today's ranges, a parameter missing). Optuna's FixedTrial answers the space's suggestions with the
    trial's values and records the distributions asked for."""
    import warnings

    import optuna

    point = flat(method, hparams)
    trial = optuna.trial.FixedTrial(point)
    try:
        with warnings.catch_warnings():  # "out of the range": create_trial refuses such a value, and it is counted
            warnings.simplefilter("ignore", UserWarning)
            define_space(trial, methods)
        return optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=list(values),
                                         params=trial.params, distributions=trial.distributions,
                                         # as Trial.set_constraint keeps them: one system attribute per budget
                                         system_attrs={f"constraints:{k}": v for k, v in (constraints or {}).items()})
    except (ValueError, TypeError):  # a parameter missing, or a value outside its distribution
        return None


def gather(sources, config: dict[str, Any], methods: dict[str, MethodSpec], default_uri: str) -> WarmStart:
    """The completed search trials of every source sweep; UserError (all problems at once) for a source that cannot
    be read or does not match."""
    out, problems = WarmStart(), []
    objectives = Objectives.from_config(config["objectives"], config["constraints"])
    for i, source in enumerate(sources):
        where = f"search.warm_start[{i}]"
        uri = source.tracking_uri or default_uri
        client = client_for(uri)
        try:
            experiment_id, parent = latest_sweep(client, source.experiment)
        except LookupError as exc:
            problems.append(f"{where}: {exc} in {uri}")
            continue
        logged = logged_config(client, parent)
        if logged is None:
            problems.append(f"{where}: the newest sweep of {source.experiment!r} did not log its config: it cannot be "
                            f"checked against this one")
            continue
        try:  # validated, so that defaults left out of the logged config compare equal
            logged = SweepConfig.model_validate(logged).model_dump(mode="json")
        except ValidationError:
            problems.append(f"{where}: the config of {source.experiment!r}'s newest sweep no longer validates")
            continue
        changes = config_changes({k: logged.get(k) for k in COMPARED}, {k: config.get(k) for k in COMPARED})
        if changes and not source.allow_mismatch:
            problems += [f"{where}: {c.replace('the sweep started with', 'that sweep had')}" for c in changes[:5]]
            problems.append(f"{where}: a different model, data, training or space: set allow_mismatch: true to take "
                            f"its trials anyway")
            continue
        taken = left_out = unmeasured = 0
        for r in load_records(client, experiment_id, parent):
            if r.stage != SEARCH or r.status != "completed" or r.method not in REGISTRY:
                continue
            point = objectives.point(r.run_id, r)
            if not point.usable:
                unmeasured += math.isfinite(objectives.score(r))
                continue
            hparams = REGISTRY[r.method].parse(r.params)
            fitted = replay(r.method, hparams, (point.accuracy, *point.costs), methods,
                            objectives.violations(r) if objectives.budgets else None)
            if fitted is None:
                left_out += 1
                continue
            out.trials.append(fitted)
            taken += 1
        outside = f"; {left_out} outside this sweep's space (methods, ranges) left out" if left_out else ""
        outside += (f"; {unmeasured} not measured in this sweep's objectives left out" if unmeasured else "")
        mismatch = " (allow_mismatch: it differs in " + ", ".join(sorted({c.split(":")[0] for c in changes})) + ")" \
            if changes else ""
        out.lines.append(f"warm start: {taken} completed trials of sweep {source.experiment!r} (parent run "
                         f"{parent[:8]}) given to the searcher{outside}{mismatch}")
    if problems:
        raise UserError(problems, "search.warm_start: cannot warm-start from")
    return out


def seed_searcher(searcher, warm: WarmStart) -> None:
    """Add the trials to the Optuna study behind Ray's OptunaSearch as completed trials with their objective values
    (Ray's own `evaluated_rewards` does not take a define-by-run space)."""
    study = searcher._ot_study  # set up by OptunaSearch once it has its space, metric and mode
    study.add_trials(warm.trials)
