"""The preflight, one for every command (`validate`, `run`, `train`): from a validated `SweepConfig` to a `SweepPlan`
(the methods with their final search ranges, the model's shape, the tokenized data, the memory plan), or every problem
at once, each named under the key or flag the user wrote, before Ray starts a worker.

The checks, in the order a user fixes them: the method (known, its hyperparameters valid, its requirements importable),
the model, the data, the context (hyperparameters against the model and max_length), the tracking server, the
capacity (a trial needing more CPUs or GPUs than the Ray cluster has would wait forever). A sweep is checked by
`build_plan`, a single trial by `plan_trial`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from peftsweep.errors import UserError
from peftsweep.metric_names import FORGETTING
from peftsweep.search.config import SweepConfig
from peftsweep.search.memory_check import MemoryPlan, plan_sweep
from peftsweep.search.results.objectives import QUALITIES
from peftsweep.search.tracking.client import check_reachable
from peftsweep.spaces import REGISTRY, ChoiceParam, MethodSpec, ModelInfo, Param, UnknownMethodError, get_method
from peftsweep.trainers.benchmarks import problems as benchmark_problems
from peftsweep.trainers.config import Resources
from peftsweep.trainers.data import TokenizedData
from peftsweep.trainers.launch import model_info, prepare_data
from peftsweep.trainers.tasks import TASKS, get_task


@dataclass
class SweepPlan:
    config: SweepConfig
    methods: dict[str, MethodSpec]
    data: TokenizedData
    info: ModelInfo
    notes: list[str] = field(default_factory=list)
    memory: MemoryPlan | None = None  # what a worker of each method's trials holds, and its strategy (docs/scale.md)

    @property
    def strategies(self) -> dict[str, str]:
        """Each method's strategy as the memory plan chose it (`auto` resolved)."""
        return self.memory.strategies if self.memory is not None else {}


def override_param(param: Param, value: Any, where: str) -> tuple[Param | None, list[str]]:
    """YAML override of one search range: [low, high] for numbers, a list of choices, or one fixed value."""
    if isinstance(param, ChoiceParam):
        choices = tuple(value) if isinstance(value, list) else (value,)
        bad = [f"{where}: {msg}" for c in choices if (msg := param.check(c))]
        return (None, bad) if bad else (param.with_choices(choices), [])
    if isinstance(value, list):
        if len(value) != 2:
            return None, [f"{where}: a range is [low, high], got {value!r}"]
        low, high = value
    else:
        low = high = value
    if isinstance(param.low, int) and not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        return None, [f"{where}: must be integers, got {value!r}"]
    new = param.with_range(low, high)
    problems = [f"{where}: {p}" for p in new.check_range()]
    return (None, problems) if problems else (new, [])


def resolve_methods(config: SweepConfig) -> tuple[dict[str, MethodSpec], list[str]]:
    requested = dict(config.methods)
    if "all" in requested:
        extra = requested.pop("all") or {}
        requested = {name: {} for name in REGISTRY} | requested
        if extra:
            return {}, ["methods.all: takes no overrides; name the method instead"]
    methods, problems = {}, []
    for name, overrides in requested.items():
        if name not in REGISTRY:
            problems.append(f"methods.{name}: unknown method (known: {', '.join(REGISTRY)})")
            continue
        spec = REGISTRY[name]
        if not isinstance(overrides, dict):
            problems.append(f"methods.{name}: expected a mapping of hyperparameter ranges, got {overrides!r}")
            continue
        new_params = {}
        for key, value in overrides.items():
            if key not in spec.params:
                problems.append(f"methods.{name}.{key}: unknown hyperparameter (known: {', '.join(spec.params)})")
                continue
            param, errs = override_param(spec.params[key], value, f"methods.{name}.{key}")
            problems += errs
            if param is not None:
                new_params[key] = param
        methods[name] = spec.with_params(new_params)
    if not methods and not problems:
        problems.append("methods: no method to search")
    return methods, problems


def fit_to_context(methods: dict[str, MethodSpec], config: SweepConfig,
                   info: ModelInfo) -> tuple[dict[str, MethodSpec], list[str], list[str]]:
    """Narrow default ranges that exceed what the model and max_length allow; reject such ranges the user set."""
    fitted, problems, notes = {}, [], []
    for name, spec in methods.items():
        changed = {}
        for key, limit in spec.upper_limits(info).items():
            param = spec.params[key]
            if param.high <= limit:
                continue
            if key in config.methods.get(name, {}):
                problems.append(f"methods.{name}.{key}: high {param.high} exceeds {limit:g} for data.max_length "
                                f"{info.max_length} and this model")
            elif param.low > limit:
                # the limit is either the text's length (raise it) or the model's positions left over (lower it)
                positions = info.max_position_embeddings
                advice = (f"lower data.max_length to at most {positions - param.low:g} (the model takes {positions} "
                          f"positions, virtual tokens included)" if positions and limit < info.max_length - 1
                          else "raise data.max_length")
                problems.append(f"methods.{name}: {key} needs at least {param.low}, but data.max_length "
                                f"{info.max_length} allows at most {limit:g}; {advice}")
            else:
                changed[key] = param.with_range(param.low, type(param.high)(limit))
                notes.append(f"{name}.{key}: range narrowed to [{param.low}, {limit:g}] for max_length "
                             f"{info.max_length}")
        fitted[name] = spec.with_params(changed)
    return fitted, problems, notes


def needs(config: SweepConfig, methods, available: dict[str, float]) -> dict[str, Any]:
    """Each method's per-trial resources (GPUs `auto` resolved against what is available)."""
    return {m: config.resources.for_method(m, available.get("GPU", 0) > 0) for m in methods}


def task_problems(config: SweepConfig, methods: dict[str, MethodSpec]) -> list[str]:
    """Settings that belong to another task kind, methods that do not do this one, and the task kind's own checks
    of its data section."""
    problems = [f"methods.{name}: does not support task {config.task} (it supports {', '.join(spec.tasks)})"
                for name, spec in methods.items() if config.task not in spec.tasks]
    for other in TASKS.values():
        if other.name == config.task:
            continue
        problems += [f"data.{key}: only for task: {other.name} (the task is {config.task})"
                     for key in other.data_keys if key in config.data.model_fields_set]
        if other.has_settings and other.name in config.model_fields_set:
            problems.append(f"{other.name}: only for task: {other.name} (the task is {config.task})")
    task = get_task(config.task)
    quality = config.metric or config.objectives[0]
    if config.metric and QUALITIES[config.objectives[0]] != QUALITIES[config.metric]:
        problems.append(f"objectives: the first is the quality, and metric: says {config.metric} (write "
                        f"[{config.metric}, ...], or leave one of them out)")
    if quality not in task.qualities:
        key = "metric" if config.metric else "objectives[0]"
        problems.append(f"{key}: {quality} is not a quality of task {config.task} (it has {', '.join(task.qualities)})")
    if config.forgetting is not None and not task.has_lm_head:
        problems.append(f"forgetting: not for task: {config.task} (a classifier has a new head and no language-model "
                        f"head left to score general text with; docs/generation.md)")
    for key, names in (("objectives", config.objectives[1:]), ("constraints", list(config.constraints))):
        if FORGETTING in names and config.forgetting is None:
            problems.append(f"{key}: {FORGETTING} needs a forgetting: section (the general text it is measured on)")
    if config.evaluate.lm_eval is not None:
        if not task.has_lm_head:
            problems.append(f"evaluate.lm_eval: not for task: {config.task} (lm-eval scores a language model; a "
                            f"classifier has none)")
        else:
            problems += benchmark_problems(config.evaluate.lm_eval)
    return problems + task.data_problems(config.data, getattr(config, task.name) if task.has_settings else None)


def check_settings(config: SweepConfig, methods: dict[str, MethodSpec]) -> list[str]:
    problems = [f"resources.per_method.{name}: not a method of this sweep"
                for name in config.resources.per_method if name not in methods]
    problems += task_problems(config, methods)
    r = config.resources
    for name in methods:  # the key the user wrote: the method's own override, else the sweep-wide one
        if r.cpu_offload_of(name) and r.strategy_of(name) == "ddp":
            override = r.per_method.get(name)
            key = (f"resources.per_method.{name}.cpu_offload" if override and override.cpu_offload is not None
                   else "resources.cpu_offload")
            problems.append(f"{key}: needs strategy fsdp or auto for {name} (ddp keeps the whole model on every "
                            f"device)")
    if config.early_stopping.enabled and config.early_stopping.grace_period >= config.train.epochs:
        problems.append(f"early_stopping.grace_period: {config.early_stopping.grace_period} must be below "
                        f"train.epochs ({config.train.epochs}), or no trial can be stopped early")
    if config.early_stopping.enabled and config.search.algorithm == "grid":
        problems.append("early_stopping.enabled: not with search.algorithm grid (a grid is meant to be complete)")
    return problems


def build_plan(config: SweepConfig, available: dict[str, float] | None = None) -> SweepPlan:
    """The sweep's preflight (search.plan): `available` are the Ray cluster's resources when known (this
    machine's for a local Ray); a sweep bound for a cluster has its capacity checked once connected."""
    methods, problems = resolve_methods(config)
    for name, spec in methods.items():
        problems += requirement_problems(name, spec, where="methods.")
    problems += check_settings(config, methods)
    if available is not None:
        problems += capacity_problems(needs(config, methods, available), available)
    problems += check_reachable(config.tracking_uri)
    data = info = None
    try:
        data = prepare_data(config.model, config.data, task=get_task(config.task),
                            trust_remote_code=config.trust_remote_code, forgetting=config.forgetting)
        info = model_info(config.model, data.max_length, config.trust_remote_code)
        if config.data.max_length is None and 0 < info.max_position_embeddings < data.max_length:
            # the task's default length is more than this model takes: its own limit, not an error the user made
            limited = config.data.model_copy(update={"max_length": info.max_position_embeddings})
            data = prepare_data(config.model, limited, task=get_task(config.task),
                                trust_remote_code=config.trust_remote_code, forgetting=config.forgetting)
            info = model_info(config.model, data.max_length, config.trust_remote_code)
    except UserError as exc:
        problems += exc.problems
    notes: list[str] = []
    if info is not None and 0 < info.max_position_embeddings < info.max_length:
        problems.append(f"data.max_length: {info.max_length} is more than the {info.max_position_embeddings} "
                        f"positions the model takes ({config.model}); at most {info.max_position_embeddings}")
    elif info is not None:
        methods, more, notes = fit_to_context(methods, config, info)
        problems += more
    memory = None
    if not problems:  # the methods, model and data are known: what a worker holds, and which strategy
        memory, more = plan_sweep(config, methods, data.label_names, data.max_length, available)
        problems += more
    if problems:
        raise UserError(problems, "invalid sweep config")
    return SweepPlan(config=config, methods=methods, data=data, info=info, notes=notes, memory=memory)


# A single trial (`peftsweep train`), and the checks a sweep's plan shares with it.

def requirement_problems(name: str, spec: MethodSpec, where: str = "") -> list[str]:
    """The method's packages that do not import (bitsandbytes for QLoRA), each with its install hint."""
    return [f"{where}{name}: {missing}" for missing in spec.missing_requirements()]


def method_problems(name: str, hparams: dict[str, Any], info: ModelInfo | None, where: str = "") -> list[str]:
    """A method name with a concrete hyperparameter set: known, valid (against the model when `info` is given),
    its requirements importable."""
    try:
        spec = get_method(name)
    except UnknownMethodError as exc:
        return [f"{where}method: {exc}"]
    return [f"{where}{name}.{p}" for p in spec.check(hparams, info)] + requirement_problems(name, spec, where)


def local_resources() -> dict[str, float]:
    """What a local Ray started by this process will have: this machine's CPUs and CUDA GPUs."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # no torch, or a broken driver: no GPU to count on
        pass
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def capacity_problems(needs: dict[str, Resources], available: dict[str, float], where: str = "resources") -> list[str]:
    """`needs`: each method's per-trial resources. A trial that asks for more than the cluster has never starts."""
    problems = []
    cpus, gpus = available.get("CPU", 0), available.get("GPU", 0)
    for method, r in needs.items():
        need_cpu, need_gpu = r.num_workers * r.cpus_per_worker, r.num_workers * r.gpus_per_worker
        if need_cpu > cpus:
            problems.append(f"{where}: a {method} trial needs {need_cpu:g} CPUs ({r.num_workers} workers x "
                            f"{r.cpus_per_worker:g}) but the Ray cluster has {cpus:g}")
        if need_gpu > gpus:
            problems.append(f"{where}: a {method} trial needs {need_gpu:g} GPUs but the Ray cluster has {gpus:g}")
    return problems


@dataclass
class TrialPlan:
    """A single trial (`peftsweep train`), checked: the one-method sweep plan it belongs to and its hyperparameters
    (the method's defaults, overridden by those given)."""

    plan: SweepPlan
    method: str
    hparams: dict[str, Any]


def plan_trial(config: SweepConfig, method: str, hparams: dict[str, Any],
               available: dict[str, float] | None = None) -> TrialPlan:
    """Every check of a sweep, for a sweep of one method (`config`'s methods replaced by it), and the trial's
    hyperparameters against the model and data; every problem at once. `available`: the cluster's resources, when
    known. Hyperparameters the user gave (`--hp`) are named as `<method>.<key>`."""
    spec = REGISTRY.get(method)
    hparams = (spec.defaults() if spec else {}) | hparams
    problems = method_problems(method, hparams, None)
    plan = None
    if spec is not None:
        try:
            plan = build_plan(config.model_copy(update={"methods": {method: {}}}), available)
        except UserError as exc:
            said = set(requirement_problems(method, spec, where="methods."))  # method_problems said them
            problems += [p for p in exc.problems if p not in said]
    if plan is not None:
        problems += method_problems(method, hparams, plan.info)  # virtual tokens against max_length
    if problems:
        raise UserError(list(dict.fromkeys(problems)), "invalid trial")
    return TrialPlan(plan, method, hparams)
