"""The method registry: every module of this package but the shared ones (`SHARED_MODULES`) is a fine-tuning method
and defines `SPEC = MethodSpec(...)`; a module that does not, and two methods of one name, are refused at import.

Adding a method = adding one module with its `SPEC` (and its hand count in tests/spaces/hand_counts.py); the registry
and the contract tests find it. What the rest of the code needs to know of a method, it asks the `MethodSpec`.
Method modules import PEFT inside the functions that use it: `import peft` takes ~6 s on a small CPU, and processes
that only read the registry (the sweep's driver, every trial's Ray driver process) never need it.
"""

from __future__ import annotations

import importlib
import pkgutil

from peftsweep.spaces.accounting import ParamCounts, count_base_params, count_params
from peftsweep.spaces.base import TASK_KINDS, MethodSpec, ModelInfo, Requirement, TaskName
from peftsweep.spaces.params import ChoiceParam, Condition, FloatParam, IntParam, Param


# What the methods share; every other module here is a method.
SHARED_MODULES = frozenset({"accounting", "base", "params", "peft_common"})


class RegistryError(RuntimeError):
    """A method module is broken: the registry refuses to load rather than drop a method silently."""


def discover(package: str, path: list[str], shared: frozenset[str] = SHARED_MODULES) -> dict[str, MethodSpec]:
    found: dict[str, MethodSpec] = {}
    where: dict[str, str] = {}
    for info in pkgutil.iter_modules(path):
        if info.name in shared:
            continue
        spec = getattr(importlib.import_module(f"{package}.{info.name}"), "SPEC", None)
        if not isinstance(spec, MethodSpec):
            raise RegistryError(f"{package}.{info.name} defines no SPEC = MethodSpec(...): every module of {package} "
                                f"but {sorted(shared)} is a method")
        if spec.name in found:
            raise RegistryError(f"two methods are named {spec.name!r}: {where[spec.name]} and {package}.{info.name}")
        found[spec.name], where[spec.name] = spec, f"{package}.{info.name}"
    return dict(sorted(found.items()))


REGISTRY: dict[str, MethodSpec] = discover(__name__, __path__)


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return f"unknown method {self.args[0]!r}; known methods: {', '.join(REGISTRY)}"


def get_method(name: str) -> MethodSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name) from None


__all__ = ["REGISTRY", "TASK_KINDS", "TaskName", "get_method", "discover", "RegistryError", "UnknownMethodError", "MethodSpec",
           "ModelInfo", "ParamCounts", "Requirement",
           "count_base_params", "count_params", "ChoiceParam", "Condition", "FloatParam", "IntParam", "Param"]
