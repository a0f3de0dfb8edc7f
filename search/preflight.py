"""One preflight for every command (`validate`, `run`, `train`): what can be checked before Ray starts a worker, each
problem named under the key or flag the user wrote, all of them reported at once.

The checks, in the order a user fixes them: the method (known, its hyperparameters valid, its requirements importable),
the model, the data, the context (hyperparameters against the model and max_length), the tracking server, the
capacity (a trial needing more CPUs or GPUs than the Ray cluster has would wait forever). A sweep is checked by
`search.plan.build_plan`, a single trial by `plan_trial`; both go through the functions here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from peftsweep.errors import UserError
from peftsweep.spaces import MethodSpec, ModelInfo, UnknownMethodError, get_method
from peftsweep.trainers.config import Resources, TrainSettings, TrialConfig
from peftsweep.trainers.data import DataSpec, TokenizedData
from peftsweep.trainers.launch import model_info, prepare_data
from peftsweep.trainers.model import load_model_config


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
    """A single trial (`peftsweep train`), checked: its config and its tokenized data."""

    config: TrialConfig
    data: TokenizedData


def plan_trial(model: str, method: str, hparams: dict[str, Any], data: DataSpec, train: TrainSettings,
               resources: Resources, available: dict[str, float] | None = None,
               task: str = "classification") -> TrialPlan:
    """Every check of a sweep that applies to one trial; `available`: the cluster's resources, when known."""
    problems = method_problems(method, hparams, None, where="")
    try:
        load_model_config(model)
    except UserError as exc:
        problems += exc.problems
    if available is not None:
        problems += capacity_problems({method: resources}, available, where="--workers/--cpus-per-worker/--gpus")
    if problems:
        raise UserError(problems, "invalid trial")
    tokenized = prepare_data(model, data, task=task)
    info = model_info(model, tokenized.max_length)
    if problems := method_problems(method, hparams, info, where=""):  # virtual tokens against max_length
        raise UserError(problems, "invalid trial")
    config = TrialConfig(model=model, task=task, method=method, hparams=hparams, num_labels=tokenized.num_labels,
                         label_names=tokenized.label_names, max_length=tokenized.max_length, train=train,
                         resources=resources)
    return TrialPlan(config, tokenized)
