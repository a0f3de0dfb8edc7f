"""What a fine-tuning method is: its hyperparameters, how it adapts a model, and how it persists.

A `MethodSpec` knows nothing of how it is searched (Optuna only sees the `Trial` protocol) or trained.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn

from peftsweep.spaces.params import ChoiceParam, IntParam, Param, Trial
from peftsweep.task_names import TaskName

# Names of the task-head modules that `AutoModelForSequenceClassification` adds on top of a pre-trained body.
HEAD_MODULE_NAMES = ("classifier", "score", "pre_classifier")
TASK_KINDS = tuple(TaskName)


@dataclass(frozen=True)
class ModelInfo:
    """The shape facts a method needs to check its hyperparameters against a model and a tokenizer setting."""

    model_type: str
    num_layers: int
    hidden_size: int
    max_position_embeddings: int
    max_length: int

    @classmethod
    def from_config(cls, config: Any, max_length: int) -> ModelInfo:
        return cls(
            model_type=config.model_type,
            num_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            max_position_embeddings=getattr(config, "max_position_embeddings", 0) or 0,
            max_length=max_length,
        )


@dataclass(frozen=True)
class Requirement:
    """A package a method needs beyond the base install, checked before any trial starts."""

    module: str  # what to import
    install_hint: str  # what to tell a user who lacks it

    def problem(self) -> str | None:
        """None when it imports; else the hint, with why it did not."""
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # ImportError, or a broken native library
            return f"{self.install_hint} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return None


ApplyFn = Callable[[nn.Module, dict[str, Any], str], nn.Module]  # (model, hyperparameters, task kind)
SaveFn = Callable[[nn.Module, Path], None]
LoadFn = Callable[[nn.Module, Path, dict[str, Any], str], nn.Module]  # (base, directory, hyperparameters, task kind)
StoredFn = Callable[[nn.Module], int]
CheckFn = Callable[[dict[str, Any], ModelInfo], list[str]]
LimitsFn = Callable[[ModelInfo], dict[str, float]]
QuantizationFn = Callable[[Any], Any]  # compute dtype -> a transformers quantization config
AddedTokensFn = Callable[[dict[str, Any]], int]


def _no_context_checks(hparams: dict[str, Any], info: ModelInfo) -> list[str]:
    return []


def _no_limits(info: ModelInfo) -> dict[str, float]:
    return {}


def _no_added_tokens(hparams: dict[str, Any]) -> int:
    return 0


@dataclass(frozen=True)
class MethodSpec:
    """One fine-tuning method.

    name: the key users write in YAML and on the command line.
    summary: one line for `peftsweep methods`.
    params: the method's own hyperparameters, learning rate included (methods need very different LR ranges).
    apply: turns a loaded pre-trained model into the adapted, trainable model (frozen base + trainable parts), for a
        task kind (`TASK_KINDS`: PEFT wraps a classifier and a causal LM differently).
    save / load: persist the trained parts (adapter-only for PEFT) and rebuild the model from a base + checkpoint.
    tasks: the task kinds the method works with.
    stored_params: how many parameters `save` keeps, i.e. what inference needs (may be fewer than were trained).
    check_context: checks that need the model or tokenizer settings (virtual tokens vs max_length, ...).
    upper_limits: the largest meaningful value of some parameters for a model and max_length, so that a default
        search range can be fitted to the task (virtual tokens below max_length).
    base_quantization: how the pre-trained base is loaded before `apply`: None for as it is, else a function of the
        compute dtype giving the quantization config to load it with (QLoRA: 4-bit NF4).
    requires: packages the method needs beyond the base install (checked by every command before anything runs).
    reference: the method PEFT is compared against (full fine-tuning): gaps and ratios are taken to its best trial.
    stores_every_weight: its checkpoint holds every weight of the model (large: MLflow gets only the manifest).
    flop_factor: training FLOPs per non-embedding parameter per token: 6 when every weight gets a gradient (forward,
        backward to activations and to weights), 4 when the base is frozen (no weight gradients for it).
    added_tokens: tokens the method adds to every input sequence (soft prompts), given its hyperparameters.
    unquantized: for a method with `base_quantization`, the method it is on a full-precision base (QLoRA: LoRA); the
        memory plan counts its parameters that way, on PyTorch's meta device, where nothing can be quantized.
    """

    name: str
    summary: str
    params: dict[str, Param]
    apply: ApplyFn
    save: SaveFn
    load: LoadFn
    stored_params: StoredFn
    check_context: CheckFn = _no_context_checks
    upper_limits: LimitsFn = _no_limits
    base_quantization: QuantizationFn | None = None
    requires: tuple[Requirement, ...] = ()
    reference: bool = False
    stores_every_weight: bool = False
    flop_factor: int = 4
    added_tokens: AddedTokensFn = _no_added_tokens
    tasks: tuple[TaskName, ...] = TASK_KINDS
    unquantized: str | None = None

    @property
    def quantized(self) -> bool:
        return self.base_quantization is not None

    def missing_requirements(self) -> list[str]:
        """One line per requirement that does not import, with its install hint."""
        return [problem for r in self.requires if (problem := r.problem()) is not None]

    def defaults(self) -> dict[str, Any]:
        """A full hyperparameter set from the declared defaults (conditional ones only where they apply)."""
        hparams: dict[str, Any] = {}
        for key, param in self.params.items():
            if param.when is None or param.when.holds(hparams):
                hparams[key] = param.default
        return hparams

    def largest(self, most: int = 16) -> list[dict[str, Any]]:
        """Hyperparameter sets that train the most parameters its ranges allow: every size at the top of its range,
        with each combination of the choices that change what trains (at most `most` of them; what a memory plan
        must make room for)."""
        from itertools import islice, product

        choices = [key for key, p in self.params.items() if isinstance(p, ChoiceParam) and p.size]
        sets = []
        for combo in islice(product(*(self.params[k].choices for k in choices)), most):
            picked, hparams = dict(zip(choices, combo)), {}
            for key, param in self.params.items():
                if param.when is None or param.when.holds(hparams):
                    if key in picked:
                        hparams[key] = picked[key]
                    else:
                        hparams[key] = param.high if getattr(param, "size", False) else param.default
            sets.append(hparams)
        return sets

    def suggest(self, trial: Trial) -> dict[str, Any]:
        """Define-by-run sampling; names are prefixed with the method so ranges never clash across methods."""
        hparams: dict[str, Any] = {}
        for key, param in self.params.items():
            if param.when is None or param.when.holds(hparams):
                hparams[key] = param.suggest(trial, f"{self.name}.{key}")
        return hparams

    def check(self, hparams: dict[str, Any], info: ModelInfo | None = None) -> list[str]:
        """Every problem with a concrete hyperparameter set, as 'key: problem' strings."""
        problems = [f"{key}: unknown hyperparameter for {self.name} (known: {', '.join(self.params)})"
                    for key in hparams if key not in self.params]
        for key, param in self.params.items():
            applies = param.when is None or param.when.holds(hparams)
            if key not in hparams:
                if applies:
                    problems.append(f"{key}: missing")
                continue
            msg = param.check(hparams[key])
            if msg:
                problems.append(f"{key}: {msg}")
        if not problems and info is not None:
            problems += self.check_context(hparams, info)
        return problems

    def parse(self, logged: dict[str, str]) -> dict[str, Any]:
        """The method's hyperparameters typed again from their logged strings (MLflow keeps parameters as text);
        keys that are not the method's own are left out."""
        values: dict[str, Any] = {}
        for key, param in self.params.items():
            raw = logged.get(key)
            if raw is None:
                continue
            if isinstance(param, ChoiceParam):
                values[key] = next((c for c in param.choices if str(c) == raw), raw)
            else:
                values[key] = int(float(raw)) if isinstance(param, IntParam) else float(raw)
        return values

    def with_params(self, params: dict[str, Param]) -> MethodSpec:
        """The same method with some search ranges replaced (YAML overrides)."""
        return replace(self, params={**self.params, **params})

    def describe(self) -> list[str]:
        lines = [f"{self.name}: {self.summary}"]
        for key, param in self.params.items():
            cond = f"  (only when {param.when})" if param.when else ""
            default = str(param.default) if isinstance(param, ChoiceParam) else f"{param.default:g}"
            lines.append(f"    {key:<22} {param.describe():<28} default {default:<8} {param.help}{cond}")
        return lines


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze_head(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if name.split(".")[-1] in HEAD_MODULE_NAMES:
            for p in module.parameters():
                p.requires_grad_(True)
