"""The Tune trial: turns one sampled point of the space into a Ray Train job (Train V2 pattern).

It runs in a Tune trial process that holds no CPU (only a little memory): the CPUs belong to the Train workers, so a
2-worker trial fits on a 2-core laptop.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from search.space import unflat
from trainers.config import TrialConfig
from trainers.launch import make_trainer

# The trial driver only waits on the Train controller: it needs no CPU, and `memory` exists on every Ray node.
DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


def sweep_trial(config: dict[str, Any], *, data: Any, settings: dict[str, Any]) -> None:
    """`settings` is the sweep-wide part of a TrialConfig (model, labels, training, per-method resources)."""
    point = config.get("point", config)  # grid search wraps each point
    method, hparams = unflat(point)
    trial = TrialConfig.model_validate(
        {k: v for k, v in settings.items() if k not in ("resources_by_method", "storage_path")}
        | {"method": method, "hparams": hparams, "resources": settings["resources_by_method"][method]})
    context = tune.get_context()
    trainer = make_trainer(trial, data, storage_path=settings["storage_path"], name=context.get_trial_name(),
                           callbacks=[TuneReportCallback()])
    trainer.fit()
