"""A stand-in for the recipe, for bench/scale.py only: a trial that trains nothing and reports at once.

A sweep of a thousand trials measures what grows with the trial count in the driver (the searcher, the schedulers,
the MLflow trial logger, the tracking store, resume state, the summary and the dashboard), not training. With
`PEFTSWEEP_STAND_IN_TRIALS=1` in the environment of Ray's processes (bench/scale.py sets it before Ray starts), a
trial that trains in its own process (trainers.launch.train_in_process) runs `stand_in_recipe` instead of the
recipe: the same session, the same per-epoch reports and checkpoints, the same metric names, with values that are
plausible but made up:

- the method's exact trainable parameters (trainers.memory_plan.count_parameters on the meta device), as % of the
  base model's;
- a validation accuracy that depends smoothly on the hyperparameters (the learning rate's distance from a best one
  per method, a deterministic draw per configuration) and rises with the epochs, so that the searcher has a
  landscape to learn and the Pareto scheduler something to stop;
- memory, time and checkpoint size that grow with the trainable parameters.

Nothing of it is a measurement of any method. It is off unless the variable is set; no config key turns it on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

ENV = "PEFTSWEEP_STAND_IN_TRIALS"


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


@functools.cache
def _counts(model: str, method: str, hparams_json: str, task: str, labels: tuple[str, ...]) -> tuple[int, int]:
    """(trainable, base) parameters of the method on the model: counted on the meta device, once per process."""
    from peftsweep.spaces import REGISTRY, get_method
    from peftsweep.trainers.memory_plan import count_parameters
    from peftsweep.trainers.model import load_model_config
    from peftsweep.trainers.tasks import get_task

    config = load_model_config(model)
    kind = get_task(task)
    counts = count_parameters(config, get_method(method), json.loads(hparams_json), kind, labels)
    reference = next(spec for spec in REGISTRY.values() if spec.reference)  # full fine-tuning: every weight trains
    base = count_parameters(config, reference, {}, kind, labels)
    return counts.trainable, base.total


def _draw(key: str) -> float:
    """A number in [0, 1) fixed by `key` (the same configuration draws the same)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def plausible_accuracy(method: str, hparams: dict[str, Any], epoch: int, epochs: int) -> float:
    """A made-up validation accuracy: best near a method's own learning rate, a little noise per configuration,
    rising with the epochs."""
    ceiling = 0.6 + 0.3 * _draw(method)
    best_lr = 10 ** (-4 + 2 * _draw(method + "/lr"))
    distance = abs(math.log10(float(hparams.get("lr", best_lr))) - math.log10(best_lr))
    noise = 0.05 * (_draw(json.dumps(hparams, sort_keys=True)) - 0.5)
    final = max(0.05, min(0.99, ceiling - 0.15 * distance ** 2 + noise))
    return final * (1 - 0.5 ** (epoch * 3 / max(1, epochs)))


def stand_in_recipe(config: dict[str, Any], session) -> None:
    """What trainers.recipe.run_recipe reports, epoch by epoch, after no training (see the module's notes)."""
    from peftsweep.metric_names import (BASE_PARAMS, CHECKPOINT_MB, PEAK_MEMORY_MB, RESTARTS, SAMPLES_PER_SECOND,
                                        TEST_ACCURACY, TOKENS_PER_SECOND, TRAIN_LOSS, TRAIN_SECONDS, TRAINABLE_PARAMS,
                                        TRAINABLE_PCT, VAL_ACCURACY)
    from peftsweep.trainers.checkpoint import MANIFEST
    from peftsweep.trainers.config import TrialConfig

    cfg = TrialConfig.model_validate(config["trial"])
    trainable, base = _counts(cfg.model, cfg.method, json.dumps(cfg.hparams, sort_keys=True), cfg.task,
                              tuple(cfg.label_names))
    started = time.time()
    checkpoint_mb = trainable * 4 / 2**20
    for epoch in range(1, cfg.train.epochs + 1):
        accuracy = plausible_accuracy(cfg.method, cfg.hparams, epoch, cfg.train.epochs)
        metrics = {"epoch": epoch, TRAIN_LOSS: 1.5 * (1 - accuracy), VAL_ACCURACY: accuracy,
                   TRAIN_SECONDS: 0.01 * epoch * (1 + math.log10(1 + trainable)), RESTARTS: 0,
                   SAMPLES_PER_SECOND: 100.0, TOKENS_PER_SECOND: 3000.0, TRAINABLE_PARAMS: float(trainable),
                   TRAINABLE_PCT: 100.0 * trainable / base, BASE_PARAMS: float(base),
                   PEAK_MEMORY_MB: 50.0 + 16 * trainable / 2**20, "train_started_at": started,
                   "reported_at": time.time(), "num_workers": 1, "process_group_size": 1,
                   "gpus_per_worker": 0.0, "device": "cpu", "strategy": "ddp", "trains_in": "stand-in"}
        if epoch == cfg.train.epochs:
            metrics[TEST_ACCURACY] = accuracy
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / MANIFEST).write_text(json.dumps({"model": cfg.model, "method": cfg.method,
                                                          "hparams": cfg.hparams, "epoch": epoch, "stand_in": True}))
            metrics[CHECKPOINT_MB] = checkpoint_mb
            session.report(metrics, Path(tmp))
