"""Real 2-worker Ray Train trials (gloo on CPU) through the production recipe."""

from pathlib import Path

import pytest
import ray
import torch

from peftsweep.trainers.checkpoint import load_checkpoint
from peftsweep.trainers.config import Resources, TrainSettings, TrialConfig
from peftsweep.trainers.launch import run_trial

DDP_METHODS = ["lora", "prefix", "prompt", "adapter", "full"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("method", DDP_METHODS)
def test_two_workers_keep_trainable_parameters_identical(method, local_ray, tiny_model, tiny_data, tmp_path: Path):
    from peftsweep.spaces import get_method

    hp = get_method(method).defaults() | ({"num_virtual_tokens": 4} if "num_virtual_tokens" in
                                          get_method(method).params else {})
    cfg = TrialConfig(model=tiny_model, task=tiny_data.task, method=method, hparams=hp, num_labels=tiny_data.num_labels,
                      label_names=tiny_data.label_names, max_length=tiny_data.max_length,
                      train=TrainSettings(epochs=2, batch_size=8), resources=Resources(num_workers=2, cpus_per_worker=1))
    result = run_trial(cfg, ray.put(tiny_data), storage_path=str(tmp_path), name=method)

    # Each rank trained on its own shard: only DDP gradient averaging keeps the replicas equal (over a real process
    # group of two: without one the divergence is 0.0 by construction).
    assert result.metrics["num_workers"] == result.metrics["process_group_size"] == 2
    assert result.metrics["ddp_param_divergence"] == 0.0
    assert result.metrics["epoch"] == 2
    for key in ("val_accuracy", "test_accuracy", "trainable_pct", "train_seconds", "samples_per_second",
                "peak_memory_mb"):
        assert result.metrics[key] > 0, key
    assert result.metrics["samples_per_second"] * result.metrics["train_seconds"] == pytest.approx(
        2 * len(tiny_data.splits["train"]), rel=0.05)  # both epochs, both shards

    model, manifest = load_checkpoint(Path(result.checkpoint_path))
    assert manifest["epoch"] == 2 and manifest["params"]["trainable_params"] == result.metrics["trainable_params"]
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[2, 5, 3]])).logits.shape == (1, tiny_data.num_labels)
