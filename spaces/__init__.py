"""The method registry: every module in this package that defines `SPEC` is a fine-tuning method.

Adding a method = adding one module with a `SPEC = MethodSpec(...)`; the registry and the contract tests find it.
Method modules import PEFT inside the functions that use it: `import peft` takes ~6 s on a small CPU, and processes
that only read the registry (the sweep's driver, every trial's Ray driver process) never need it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

# bitsandbytes (imported by PEFT) warns at import that it cannot fetch an optional CPU kernel from the hub; it falls
# back to its built-in one, so the warning is noise on every command.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from spaces.accounting import ParamCounts, count_base_params, count_params
from spaces.base import MethodSpec, ModelInfo
from spaces.params import ChoiceParam, Condition, FloatParam, IntParam, Param


def _discover() -> dict[str, MethodSpec]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if isinstance(spec, MethodSpec):
            found[spec.name] = spec
    return dict(sorted(found.items()))


REGISTRY: dict[str, MethodSpec] = _discover()


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return f"unknown method {self.args[0]!r}; known methods: {', '.join(REGISTRY)}"


def get_method(name: str) -> MethodSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name) from None


__all__ = ["REGISTRY", "get_method", "UnknownMethodError", "MethodSpec", "ModelInfo", "ParamCounts",
           "count_base_params", "count_params", "ChoiceParam", "Condition", "FloatParam", "IntParam", "Param"]
