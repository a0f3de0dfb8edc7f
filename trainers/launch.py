"""Launch one trial as a Ray Train data-parallel job (its config checked up front by `search.plan`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import logging
from typing import Any, Callable

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from peftsweep.spaces import ModelInfo
from peftsweep.trainers.config import ForgettingSettings, Resources, TrialConfig
from peftsweep.errors import UserError
from peftsweep.trainers.data import DataSpec, TokenizedData
from peftsweep.trainers.forgetting import general_text_chunks
from peftsweep.trainers.faults import describe, is_fatal, raise_if_fatal_recorded
from peftsweep.trainers.model import load_model_config, load_tokenizer, model_files_problem
from peftsweep.trainers.recipe import run_recipe, train_loop_per_worker
from peftsweep.trainers import stand_in
from peftsweep.trainers.session import InProcessSession
from peftsweep.trainers.task_kind import TaskKind

log = logging.getLogger(__name__)


def model_info(model: str, max_length: int, trust_remote_code: bool = False) -> ModelInfo:
    return ModelInfo.from_config(load_model_config(model, trust_remote_code), max_length)


def prepare_data(model: str, data: DataSpec, *, task: TaskKind, trust_remote_code: bool = False,
                 forgetting: ForgettingSettings | None = None) -> TokenizedData:
    """Load, check and tokenize the data once for a task kind (and the general text forgetting is measured on);
    raises UserError naming the problem."""
    config = load_model_config(model, trust_remote_code)  # a missing model is reported before any data work
    kind = task
    if (problem := kind.model_problem(config)) is not None:
        raise UserError(problem)
    positions = getattr(config, "max_position_embeddings", 0) or 0
    tokenizer = load_tokenizer(model, trust_remote_code)
    if (problem := model_files_problem(model, tokenizer, config)) is not None:
        raise UserError(problem)
    tokenized = kind.tokenize(data, tokenizer, positions)
    if forgetting is not None:
        tokenized = dataclasses.replace(tokenized, general_text=general_text_chunks(forgetting, tokenizer, positions))
    return tokenized


# A trial's Ray Train job tries this many times to place and start its workers (each try waits
# RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S), then fails the trial saying so; Ray's own default tries for ever, and a
# sweep whose resources were held elsewhere (a lost node, another job) waited without end.
WORKER_START_TRIES = 3


def scaling_for(resources: Resources) -> ScalingConfig:
    per_worker = {"CPU": resources.cpus_per_worker} | ({"GPU": resources.gpus_per_worker} if resources.use_gpu else {})
    return ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                         resources_per_worker=per_worker)


def make_trainer(cfg: TrialConfig, data: TokenizedData | ray.ObjectRef, *, storage_path: str, name: str,
                 callbacks: list | None = None, trainer: type[TorchTrainer] = TorchTrainer) -> TorchTrainer:
    """The Ray Train job for one trial: N workers, gloo on CPU, NCCL on GPU. `trainer`: TorchTrainer or a subclass
    (a sweep's trials leave out helper actors they do not need, search.orchestration.ray_private)."""
    return trainer(
        train_loop_per_worker,
        # run_dir: where a worker leaves a note that its failure must not be retried (trainers.faults)
        train_loop_config={"trial": cfg.model_dump(), "data": data, "run_dir": run_dir_of(storage_path, name)},
        scaling_config=scaling_for(cfg.resources),
        torch_config=TorchConfig(backend="nccl" if cfg.resources.use_gpu else "gloo"),
        # Same name + storage_path: a re-launched trial (sweep resumed) continues from its latest checkpoint.
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks or [],
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures,
                                                          controller_failure_limit=WORKER_START_TRIES - 1)),
    )


def train_in_process(cfg: TrialConfig, data: TokenizedData | ray.ObjectRef, *, run_dir: str,
                     forward: Callable[[dict[str, Any]], None]) -> None:
    """A trial's only worker, in this process (`cfg.resources.trains_in_process`): each epoch's report goes to
    `forward`, checkpoints to `run_dir`. After an error it restarts from the last checkpoint, as Ray Train restarts a
    worker group (`train.max_failures` times; a NaN loss or running out of memory is not retried); then it raises
    `InProcessTrainingError` with the reason."""
    session = InProcessSession(run_dir, cfg.train.checkpoints_to_keep, forward, cfg.resources.use_gpu)
    config = {"trial": cfg.model_dump(), "data": data, "run_dir": run_dir}
    recipe = stand_in.stand_in_recipe if stand_in.enabled() else run_recipe  # bench/scale.py only
    for attempt in range(cfg.train.max_failures + 1):
        try:
            recipe(config, session)
            return
        except Exception as exc:
            if is_fatal(exc) or attempt == cfg.train.max_failures:
                raise InProcessTrainingError(f"rank 0: {describe(exc)}") from exc
            log.warning(f"the trial's training failed ({describe(exc)}); restarting it from its last checkpoint "
                        f"({attempt + 1} of {cfg.train.max_failures})")
        finally:
            release_memory()


class InProcessTrainingError(RuntimeError):
    """A trial trained in its own process failed for good; the message is the reason, on one line."""


def release_memory() -> None:
    """What a finished trial held, given back before the process runs the next one (Tune reuses it)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_name_for(cfg: TrialConfig, prefix: str) -> str:
    """A run name of its own for each configuration (model, method, hyperparameters, data, training settings; not the
    resources): Ray Train continues a run of the same name from its last checkpoint, which is right for the same
    configuration (an interrupted `peftsweep train` run again) and wrong for another (the checkpoint does not fit)."""
    import hashlib
    import json

    what = cfg.model_dump(mode="json", exclude={"resources"})
    return f"{prefix}-{hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]}"


def run_dir_of(storage_path: str, name: str) -> str:
    """Ray Train's directory for the run `name` (checkpoints, and the marker of trainers.faults)."""
    return f"{storage_path.rstrip('/')}/{name}"


@dataclass
class TrialResult:
    metrics: dict[str, Any]
    checkpoint_path: str | None


def run_trial(cfg: TrialConfig, data: TokenizedData | ray.ObjectRef, *, storage_path: str,
              name: str) -> TrialResult:
    """Fit one trial outside a sweep (CLI `train`, tests) whose config passed the preflight (search.plan);
    returns the final metrics and checkpoint."""
    result = make_trainer(cfg, data, storage_path=storage_path, name=name).fit()
    if result.error:
        raise result.error
    raise_if_fatal_recorded(run_dir_of(storage_path, name))  # NaN loss: the workers stopped without an error
    return TrialResult(metrics=dict(result.metrics or {}),
                       checkpoint_path=result.checkpoint.path if result.checkpoint else None)
