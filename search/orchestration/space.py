"""The joint conditional space: first the method, then that method's own hyperparameters.

A trial's config is a flat point (search.points).
"""

from __future__ import annotations

import math
from typing import Any

from peftsweep.spaces import ChoiceParam, MethodSpec, Param
from peftsweep.spaces.params import Trial
from peftsweep.search.points import flat


def define_space(trial: Trial, methods: dict[str, MethodSpec]) -> None:
    """Optuna define-by-run function (module level, so the searcher can be checkpointed; bind with partial)."""
    method = trial.suggest_categorical("method", list(methods))
    methods[method].suggest(trial)


def default_point(spec: MethodSpec, smallest: bool = False) -> dict[str, Any]:
    """The method's defaults, moved inside its (possibly narrowed) search ranges; with `smallest`, every size
    (LoRA r, virtual tokens, ...) at the low end of its range instead (choices keep their defaults)."""
    hparams: dict[str, Any] = {}
    for key, param in spec.params.items():
        if param.when is None or param.when.holds(hparams):
            low = smallest and getattr(param, "size", False) and hasattr(param, "low")
            hparams[key] = param.low if low else clamp(param, param.default)
    return hparams


def clamp(param: Param, value: Any) -> Any:
    if isinstance(param, ChoiceParam):
        return value if value in param.choices else param.choices[0]
    return min(max(value, param.low), param.high)


def start_points(methods: dict[str, MethodSpec], kind: str = "smallest") -> list[dict[str, Any]]:
    """The first trials (`search.start_points`), one per method so that no method goes untried.

    smallest: each method at its fewest trainable parameters, the rest at its defaults. The front is scored on a log
    scale of trainable %, so a method's cheap end counts most; the searcher grows a size where it pays.
    defaults: each method at its defaults. none: the searcher alone.
    """
    if kind == "none":
        return []
    return [flat(name, default_point(spec, smallest=kind == "smallest")) for name, spec in methods.items()]


def grid_values(param: Param, points: int) -> list[Any]:
    if isinstance(param, ChoiceParam):
        return list(param.choices)
    if points == 1 or param.low == param.high:
        return [param.default if param.low <= param.default <= param.high else param.low]
    if param.log:
        lo, hi = math.log(param.low), math.log(param.high)
        values = [math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points)]
    else:
        values = [param.low + (param.high - param.low) * i / (points - 1) for i in range(points)]
    if isinstance(param.low, int):
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.3g}") for v in values]


def grid(methods: dict[str, MethodSpec], points: int) -> list[dict[str, Any]]:
    """Every combination of a coarse grid, per method (conditional parameters only where they apply)."""
    configs = []
    for name, spec in methods.items():
        partial_sets: list[dict[str, Any]] = [{}]
        for key, param in spec.params.items():
            expanded = []
            for hp in partial_sets:
                if param.when is not None and not param.when.holds(hp):
                    expanded.append(hp)
                else:
                    expanded += [hp | {key: v} for v in grid_values(param, points)]
            partial_sets = expanded
        configs += [flat(name, hp) for hp in partial_sets]
    return configs


def grid_size(methods: dict[str, MethodSpec], points: int) -> int:
    return len(grid(methods, points))

