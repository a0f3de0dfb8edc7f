"""Hyperparameter importance for the validation quality searched (accuracy unless `metric:` says otherwise), per method, with optuna's fANOVA evaluator.

The joint space is conditional, and importance evaluators only use parameters every trial has, so importance is
computed within each method (its own parameters are shared by all its trials).
"""

from __future__ import annotations

import math
import warnings

from peftsweep.dashboards.sweep_data import SweepData, hyperparameters
from peftsweep.search.results.records import is_front_candidate
from peftsweep.spaces import REGISTRY, ChoiceParam, IntParam

MIN_TRIALS = 4  # fewer trials than this say nothing about importance


def distribution(param, observed: list):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, ChoiceParam):
        return CategoricalDistribution(list(dict.fromkeys(list(param.choices) + observed)))
    low, high = min([param.low, *observed]), max([param.high, *observed])
    if isinstance(param, IntParam):
        return IntDistribution(int(low), int(high), log=param.log and low > 0)
    return FloatDistribution(float(low), float(high), log=param.log and low > 0)


def method_importance(data: SweepData) -> dict[str, dict[str, float]]:
    import optuna

    scores, objectives = {}, data.summary.objectives
    for method in data.methods:
        spec = REGISTRY.get(method)
        records = [r for r in data.trials if r.method == method and is_front_candidate(r, objectives)]
        if spec is None or len(records) < MIN_TRIALS:
            continue
        rows = [hyperparameters(r) for r in records]
        keys = [k for k in spec.params if all(k in row for row in rows) and len({row[k] for row in rows}) > 1]
        if not keys:
            continue
        dists = {k: distribution(spec.params[k], [row[k] for row in rows]) for k in keys}
        study = optuna.create_study(direction="maximize")
        for row, record in zip(rows, records):
            study.add_trial(optuna.trial.create_trial(params={k: row[k] for k in keys}, distributions=dists,
                                                      value=objectives.score(record)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        scores[method] = {k: v for k, v in result.items() if math.isfinite(v)}
    return scores
