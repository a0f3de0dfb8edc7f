"""The bundled real task: pre-trained all-MiniLM-L6-v2 on TREC-6, trained in-process on a few hundred questions."""

import torch

from peftsweep.trainers.config import TrainSettings
from peftsweep.trainers.data import DataSpec
from peftsweep.trainers.launch import prepare_data
from peftsweep.trainers.classification import evaluate, train_loader
from peftsweep.trainers.loop import optimizer_for, train_epoch
from peftsweep.trainers.model import build_model
from tests.tiny import CLASSIFY

CPU = torch.device("cpu")


def test_lora_on_trec6_beats_the_majority_class_by_far():
    data = prepare_data("all-MiniLM-L6-v2", DataSpec(preset="trec6", train_size=400, validation_size=300, seed=0), task=CLASSIFY)
    labels = data.splits["validation"].labels
    majority = max(labels.count(k) for k in set(labels)) / len(labels)
    hp = {"r": 8, "alpha_multiple": 2, "dropout": 0.05, "targets": "attention", "lr": 1e-2}
    model, counts, _ = build_model("all-MiniLM-L6-v2", "lora", hp, data.label_names, pad_token_id=data.pad_token_id, task=CLASSIFY)
    assert 22_000_000 < counts.base_params < 23_000_000 and counts.trainable_pct < 1.0
    settings = TrainSettings(epochs=3, batch_size=32)
    loader = train_loader(data.splits["train"], 32, data.pad_token_id, seed=0)
    optimizer, scheduler = optimizer_for(model, hp["lr"], settings, 3 * len(loader))
    for _ in range(3):
        train_epoch(model, loader, optimizer, scheduler, settings, CPU)
    val = evaluate(model, data.splits["validation"], data.num_labels, data.pad_token_id, 128, CPU)
    assert val["accuracy"] > majority + 0.3, (val, majority)
