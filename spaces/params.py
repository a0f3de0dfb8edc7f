"""Hyperparameter declarations: a default search range plus hard validity limits.

The search range (`low`..`high` or `choices`) is what a sweep explores by default and what a user may narrow or
widen in YAML. The hard limits (`min`/`max`) say what is meaningful at all (LoRA r >= 1, a learning rate > 0):
a value or a range outside them is a user error, reported before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Protocol


class Trial(Protocol):
    """The subset of `optuna.Trial` a define-by-run space needs."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Condition:
    """Only search a parameter when another one has a given value (e.g. encoder size only with a projection)."""

    param: str
    value: Any

    def holds(self, hparams: dict[str, Any]) -> bool:
        return hparams.get(self.param) == self.value

    def __str__(self) -> str:
        return f"{self.param}={self.value}"


@dataclass(frozen=True)
class IntParam:
    low: int
    high: int
    default: int
    help: str
    log: bool = False
    min: int | None = None
    max: int | None = None
    when: Condition | None = None
    # A size: a larger value trains more parameters (LoRA r, virtual tokens, a bottleneck). A sweep's "smallest"
    # start points put every size at the low end of its range.
    size: bool = False

    def suggest(self, trial: Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        return _check_limits(value, self.min, self.max)

    def check_range(self) -> list[str]:
        return _check_range(self.low, self.high, self.min, self.max, self.log)

    def with_range(self, low: Any, high: Any) -> IntParam:
        return replace(self, low=low, high=high)

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]" + (" log" if self.log else "") + (" size" if self.size else "")


@dataclass(frozen=True)
class FloatParam:
    low: float
    high: float
    default: float
    help: str
    log: bool = False
    min: float | None = None
    max: float | None = None
    when: Condition | None = None

    def suggest(self, trial: Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        return _check_limits(value, self.min, self.max)

    def check_range(self) -> list[str]:
        return _check_range(self.low, self.high, self.min, self.max, self.log)

    def with_range(self, low: Any, high: Any) -> FloatParam:
        return replace(self, low=low, high=high)

    def describe(self) -> str:
        return f"float [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")


@dataclass(frozen=True)
class ChoiceParam:
    choices: tuple[Any, ...]
    default: Any
    help: str
    when: Condition | None = None
    size: bool = False  # the choice changes which parameters train (LoRA's target modules, a prefix MLP)

    def suggest(self, trial: Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def check(self, value: Any) -> str | None:
        return None if value in self.choices else f"must be one of {list(self.choices)}, got {value!r}"

    def check_range(self) -> list[str]:
        return [] if self.choices else ["needs at least one choice"]

    def with_choices(self, choices: tuple[Any, ...]) -> ChoiceParam:
        return replace(self, choices=tuple(choices))

    def describe(self) -> str:
        return "one of " + ", ".join(str(c) for c in self.choices)


Param = IntParam | FloatParam | ChoiceParam


def _check_limits(value: float, lo: float | None, hi: float | None) -> str | None:
    if lo is not None and value < lo:
        return f"must be >= {lo}, got {value}"
    if hi is not None and value > hi:
        return f"must be <= {hi}, got {value}"
    return None


def _check_range(low: Any, high: Any, lo: float | None, hi: float | None, log: bool) -> list[str]:
    problems = []
    for label, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            problems.append(f"{label} must be a number, got {v!r}")
    if problems:
        return problems
    if low > high:
        problems.append(f"low ({low}) is greater than high ({high})")
    for label, v in (("low", low), ("high", high)):
        msg = _check_limits(v, lo, hi)
        if msg:
            problems.append(f"{label} {msg}")
    if log and low <= 0:
        problems.append(f"a log-scaled range needs low > 0, got {low}")
    return problems
