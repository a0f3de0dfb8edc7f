"""Forgetting (trainers.forgetting): zero for an adapter that has not trained, positive after training on other text;
full fine-tuning against its base's loss measured before."""

from __future__ import annotations

import random

import pytest
import torch

from peftsweep.trainers.config import TrainSettings
from peftsweep.trainers.data import DataSpec
from peftsweep.trainers.config import ForgettingSettings
from peftsweep.trainers.forgetting import (base_general_loss, batch_size_for, forgetting, general_text_chunks,
                                          mean_token_loss, text_chunks)
from peftsweep.trainers.generation import train_loader
from peftsweep.trainers.launch import prepare_data
from peftsweep.trainers.loop import optimizer_for, train_epoch
from peftsweep.spaces import REGISTRY
from peftsweep.trainers.model import build_model, load_tokenizer
from tests.tiny import ANSWER_TEMPLATE, FILLER, GENERATE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def general_chunks(tiny_causal):
    """'General text': sentences of the toy vocabulary's filler words, nothing of the task's keywords or answers."""
    rng = random.Random(7)
    text = " ".join(" ".join(rng.choices(FILLER, k=12)) for _ in range(40))
    return text_chunks(load_tokenizer(tiny_causal), text, max_length=24, max_tokens=400)


def measure(model, chunks, **kwargs):
    return forgetting(model, chunks, pad_token_id=0, batch_size=8, device=CPU, **kwargs)


def test_chunks_are_bounded(tiny_causal, general_chunks):
    assert sum(len(c) for c in general_chunks) == 400 and max(len(c) for c in general_chunks) == 24
    text = "the apple " * 3
    assert text_chunks(load_tokenizer(tiny_causal), text, max_length=4, max_tokens=100) == [
        load_tokenizer(tiny_causal)(text, add_special_tokens=False)["input_ids"][:4],
        load_tokenizer(tiny_causal)(text, add_special_tokens=False)["input_ids"][4:6]]


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_an_untrained_adapter_forgets_nothing(tiny_causal, general_chunks, method):
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_causal, method, REGISTRY[method].defaults(), [], task=GENERATE)
    result = measure(model, general_chunks)
    assert result["forgetting"] == 0.0 and result["general_loss"] > 0


def test_training_on_other_text_forgets_and_full_uses_the_base_loss(tiny_causal, tiny_csv, general_chunks):
    data = prepare_data(tiny_causal, DataSpec(train_file=tiny_csv, template=ANSWER_TEMPLATE, seed=0), task=GENERATE)
    settings = TrainSettings(batch_size=8, warmup_ratio=0.0)
    results = {}
    for method, lr in (("lora", 3e-2), ("full", 3e-3)):
        torch.manual_seed(0)
        model, _, _ = build_model(tiny_causal, method, REGISTRY[method].defaults() | {"lr": lr}, [], task=GENERATE)
        base = base_general_loss(model, general_chunks, pad_token_id=0, batch_size=8, device=CPU)  # before a step
        assert base == pytest.approx(mean_token_loss(model, general_chunks, pad_token_id=0, batch_size=3, device=CPU))
        optimizer, scheduler = optimizer_for(model, lr, settings, total_steps=40)
        train_epoch(model, train_loader(data.splits["train"], 8, data.pad_token_id, seed=0), optimizer, scheduler,
                    settings, CPU, max_steps=30)
        results[method] = measure(model, general_chunks, base_loss=None if method == "lora" else base)
        assert results[method]["base_general_loss"] == pytest.approx(base, rel=1e-6)
    assert results["lora"]["forgetting"] > 0 and results["full"]["forgetting"] > 0
    with pytest.raises(ValueError, match="needs its base's loss"):
        measure(build_model(tiny_causal, "full", {"lr": 1e-3}, [], task=GENERATE)[0], general_chunks)


def test_the_general_text_comes_from_a_file_or_the_bundled_speeches(tiny_causal, tmp_path):
    tokenizer = load_tokenizer(tiny_causal)
    path = tmp_path / "general.txt"
    path.write_text("the apple " * 50)
    chunks = general_text_chunks(ForgettingSettings(text_file=str(path), max_tokens=30, chunk_tokens=8), tokenizer,
                                 positions=6)
    assert [len(c) for c in chunks] == [6] * 5  # 30 tokens in chunks of at most the model's 6 positions
    speeches = general_text_chunks(ForgettingSettings(preset="speeches", max_tokens=64, chunk_tokens=16), tokenizer)
    assert [len(c) for c in speeches] == [16] * 4
    assert batch_size_for(speeches, 128) == 128 and batch_size_for([[1] * 1024], 128) == 2
    assert batch_size_for([[1] * 4096], 128) == 1
