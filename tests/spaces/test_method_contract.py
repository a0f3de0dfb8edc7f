"""Contract every registered method must meet, on a tiny BERT: a new method in spaces/ is tested here for free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peftsweep.spaces import REGISTRY, ChoiceParam
from tests.spaces.hand_counts import HAND_COUNTS, Shape
from peftsweep.trainers.checkpoint import load_checkpoint, save_checkpoint
from peftsweep.trainers.config import TrainSettings
from peftsweep.trainers.classification import predict, train_loader
from peftsweep.trainers.loop import optimizer_for, train_epoch
from peftsweep.trainers.model import build_model
from tests.tiny import CLASSIFY

CPU = torch.device("cpu")


def alternate(spec) -> dict:
    """The other corner of the space: last choice of every choice, low end of every size (the LR stays default)."""
    hp = {}
    for key, param in spec.params.items():
        if param.when is not None and not param.when.holds(hp):
            continue
        if key == "lr":
            hp[key] = param.default
        elif isinstance(param, ChoiceParam):
            hp[key] = param.choices[-1]
        else:
            hp[key] = param.low
    return hp


CASES = [pytest.param(name, variant, id=f"{name}-{variant}") for name in REGISTRY for variant in ("default", "alt")]
# Behaviour is also checked on a decoder (Llama with a classification head); hand counts are for the BERT shape.
ARCHS = ["bert", "llama"]


@pytest.fixture
def arch_model(request, tiny_model, tiny_decoder) -> str:
    return {"bert": tiny_model, "llama": tiny_decoder}[request.param]


def hparams_for(name: str, variant: str) -> dict:
    spec = REGISTRY[name]
    return spec.defaults() if variant == "default" else alternate(spec)


def steps(model, data, hp, n: int, seed: int) -> None:
    settings = TrainSettings(batch_size=8, warmup_ratio=0.0)
    loader = train_loader(data.splits["train"], 8, data.pad_token_id, seed)
    optimizer, scheduler = optimizer_for(model, hp["lr"], settings, total_steps=100)
    train_epoch(model, loader, optimizer, scheduler, settings, CPU, max_steps=n)


def logits(model, data) -> torch.Tensor:
    model.eval()
    split = data.splits["validation"]
    from peftsweep.trainers.classification import collate

    batch = collate(data.pad_token_id)(list(zip(split.input_ids, split.labels)))
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("name,variant", CASES)
def test_hyperparameters_are_valid(name, variant):
    spec = REGISTRY[name]
    assert spec.check(hparams_for(name, variant)) == []
    for key, param in spec.params.items():
        assert param.check_range() == [], f"{name}.{key} default range is invalid"


@pytest.mark.parametrize("arch_model", ARCHS, indirect=True)
@pytest.mark.parametrize("name,variant", CASES)
def test_training_changes_only_trainable_parameters(name, variant, arch_model, tiny_data):
    hp = hparams_for(name, variant)
    model, counts, _ = build_model(arch_model, name, hp, tiny_data.label_names, pad_token_id=tiny_data.pad_token_id, task=CLASSIFY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Train, evaluate, train again: evaluation must not break further training (bitsandbytes CPU trap for QLoRA).
    steps(model, tiny_data, hp, 3, seed=0)
    predict(model, tiny_data.splits["validation"], tiny_data.pad_token_id, 16, CPU)
    steps(model, tiny_data, hp, 3, seed=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(before[n], p.detach()), f"trainable {n} did not change"
        else:
            assert torch.equal(before[n], p.detach()), f"frozen {n} changed"


@pytest.mark.parametrize("name,variant", CASES)
def test_parameter_counts_match_hand_count(name, variant, tiny_model, tiny_data):
    assert name in HAND_COUNTS, f"add a hand count for the new method {name!r} in tests/spaces/hand_counts.py"
    hp = hparams_for(name, variant)
    model, counts, _ = build_model(tiny_model, name, hp, tiny_data.label_names, pad_token_id=tiny_data.pad_token_id, task=CLASSIFY)
    shape = Shape.of(model.config if not hasattr(model, "peft_config") else model.base_model.config)
    trainable, stored = HAND_COUNTS[name](shape, hp)
    assert counts.base_params == shape.body  # one denominator, the same for every method (4-bit too)
    assert counts.head_params == shape.head
    assert (counts.trainable_params, counts.stored_params) == (trainable, stored)
    assert counts.trainable_pct == pytest.approx(100 * trainable / shape.body)


@pytest.mark.parametrize("arch_model", ARCHS, indirect=True)
@pytest.mark.parametrize("name,variant", CASES)
def test_checkpoint_reloads_with_same_predictions(name, variant, arch_model, tiny_data, tmp_path: Path):
    hp = hparams_for(name, variant)
    model, counts, _ = build_model(arch_model, name, hp, tiny_data.label_names, pad_token_id=tiny_data.pad_token_id, task=CLASSIFY)
    steps(model, tiny_data, hp, 4, seed=0)
    expected = logits(model, tiny_data)
    save_checkpoint(model, tmp_path, model_name=arch_model, method=name, hparams=hp,
                    label_names=tiny_data.label_names, max_length=16, counts=counts, epoch=1, task=CLASSIFY)
    stored = sum(t.numel() for f in tmp_path.glob("*.safetensors") for t in load_file(str(f)).values())
    assert stored == counts.stored_params  # the checkpoint holds exactly what we say it stores: no frozen base
    reloaded, manifest = load_checkpoint(tmp_path)
    assert manifest["method"] == name and manifest["hparams"] == hp
    torch.testing.assert_close(logits(reloaded, tiny_data), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_size_flags_name_exactly_the_numbers_that_change_the_trainable_count(name, tiny_model):
    """`size` decides the "smallest" start points: a size must grow the count, any other number must not."""
    from transformers import AutoConfig

    spec, shape = REGISTRY[name], Shape.of(AutoConfig.from_pretrained(tiny_model, num_labels=3))
    for key, param in spec.params.items():
        if isinstance(param, ChoiceParam):
            continue
        base = spec.defaults()
        if param.when is not None:
            base[param.when.param] = param.when.value
        low, high = (HAND_COUNTS[name](shape, base | {key: v})[0] for v in (param.low, param.high))
        if getattr(param, "size", False):
            assert low < high, f"{name}.{key} is marked as a size but does not change the trainable count"
        else:
            assert low == high, f"{name}.{key} changes the trainable count: mark it size=True"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_declared_capabilities_match_what_the_method_does(name, tiny_model, tiny_data):
    """What callers ask a MethodSpec (FLOP factor, added input tokens, every weight stored) is what the method does."""
    spec = REGISTRY[name]
    hp = spec.defaults()
    model, counts, _ = build_model(tiny_model, name, hp, tiny_data.label_names, pad_token_id=tiny_data.pad_token_id, task=CLASSIFY)
    base_trains = all(p.requires_grad for p in model.parameters())  # every pre-trained weight gets a gradient
    assert spec.flop_factor == (6 if base_trains else 4)
    assert spec.stores_every_weight == (counts.stored_params >= counts.base_params)
    assert not spec.reference or (base_trains and spec.stores_every_weight)  # the reference is full fine-tuning
    ids = torch.tensor([tiny_data.splits["validation"].input_ids[0]])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    assert out.hidden_states[-1].shape[1] == ids.shape[1] + spec.added_tokens(hp)
    assert spec.missing_requirements() == []  # this environment installs every method's requirements


def test_one_reference_method():
    assert len([s for s in REGISTRY.values() if s.reference]) == 1
