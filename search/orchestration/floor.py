"""The sweep's floor: the accuracy with nothing trained, measured once per sweep and kept on the MLflow parent run.

The task kind says what it is (trainers.tasks: the majority class, computed from the labels; or the base model's
zero-shot answers, which run where trials run: a Ray task with one trial worker's CPUs and GPUs).
"""

from __future__ import annotations

import math

import ray
import torch
from mlflow import MlflowClient

from peftsweep.search.results.records import Floor
from peftsweep.search.tracking.runs import FLOOR_METRICS, FLOOR_TAG, logged_floor
from peftsweep.trainers.config import TrialTemplate
from peftsweep.trainers.data import TokenizedData
from peftsweep.trainers.tasks import get_task


def _floor_on_worker(task: str, data: TokenizedData, template: TrialTemplate, threads: int) -> dict[str, float]:
    torch.set_num_threads(max(1, threads))
    device = torch.device("cuda") if torch.cuda.is_available() and ray.get_gpu_ids() else torch.device("cpu")
    return get_task(task).floor(data, template, device)


def measure_floor(task: str, data: TokenizedData, template: TrialTemplate) -> Floor:
    """The floor of this sweep, measured now."""
    kind = get_task(task)
    if kind.floor_runs_model:
        resources = next(iter(template.resources_by_method.values()))
        remote = ray.remote(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker)(_floor_on_worker)
        scores = ray.get(remote.remote(task, data, template, int(resources.cpus_per_worker)))
    else:
        scores = kind.floor(data, template, torch.device("cpu"))
    val, test = scores["validation"], scores["test"]
    if not isinstance(val, dict):  # accuracy alone
        return Floor(kind.floor_name, val, test)
    others = tuple((f"{prefix}_{name}", value) for prefix, split in (("val", val), ("test", test))
                   for name, value in split.items() if name != "accuracy")
    return Floor(kind.floor_name, val["accuracy"], test["accuracy"], others)


def sweep_floor(client: MlflowClient, parent_run_id: str, task: str, data: TokenizedData,
                template: TrialTemplate) -> Floor:
    """The floor logged on the parent run, or measured and logged now."""
    floor = logged_floor(client, parent_run_id)
    if floor is None:
        floor = measure_floor(task, data, template)
        client.set_tag(parent_run_id, FLOOR_TAG, floor.kind)
        for key, value in [*zip(FLOOR_METRICS, (floor.val_accuracy, floor.test_accuracy)),
                           *((f"floor_{name}", value) for name, value in floor.scores)]:
            if math.isfinite(value):
                client.log_metric(parent_run_id, key, value)
    return floor


def describe(floor: Floor) -> str:
    return f"floor ({floor.kind}): val acc {floor.val_accuracy:.3f}, test acc {floor.test_accuracy:.3f}"
