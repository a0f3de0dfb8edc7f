"""The memory plan's arithmetic by hand, and its parameter counts against the real adapted model."""

from __future__ import annotations

import pytest

from peftsweep.trainers.memory_plan import (ADAMW_STATE_BYTES, BF16, FP32, NF4_BYTES, OVERHEAD_BYTES, ModelShape,
                                            ParameterCounts, Workload, count_parameters, plan_worker)
from tests.tiny import GENERATE

SHAPE = ModelShape(hidden_size=64, num_layers=2, intermediate_size=128, vocab_size=1000)
LEAN = Workload(batch_per_worker=4, sequence_length=16, causal_lm=True, lean=True)
ACTIVATIONS = 4 * 16 * 2 * (8 * 64 + 4 * 128) * BF16
LOGITS = 2 * 4 * 16 * 1000 * FP32


def test_ddp_holds_everything_and_its_buckets():
    counts = ParameterCounts(trainable=1000, frozen=0, root=200, largest_block=400)
    plan = plan_worker(counts, SHAPE, LEAN, "ddp")
    assert plan.parts["weights"] == 1000 * FP32 and plan.parts["gradients"] == 1000 * FP32
    assert plan.parts["optimizer"] == 1000 * ADAMW_STATE_BYTES and plan.parts["ddp buckets"] == 1000 * FP32
    assert plan.parts["activations"] == ACTIVATIONS and plan.parts["logits"] == LOGITS
    assert plan.device == 1000 * (4 + 4 + 8 + 4) + ACTIVATIONS + LOGITS + OVERHEAD_BYTES


def test_fsdp_shards_the_state_and_gathers_the_root_and_two_blocks():
    counts = ParameterCounts(trainable=10, frozen=8000, quantized=0, root=2000, largest_block=3000)
    ddp = plan_worker(counts, SHAPE, LEAN, "ddp")
    fsdp = plan_worker(counts, SHAPE, LEAN, "fsdp", workers=4)
    assert fsdp.parts["weights"] == pytest.approx(ddp.parts["weights"] / 4)
    assert fsdp.parts["weights"] == pytest.approx((10 * FP32 + 8000 * BF16) / 4)  # frozen weights lean: bf16
    assert fsdp.parts["gathered (root + 2 blocks)"] == (2000 + 2 * 3000) * BF16
    offloaded = plan_worker(counts, SHAPE, LEAN, "fsdp", workers=4, cpu_offload=True)
    assert offloaded.parts["weights"] == 0 and offloaded.host == pytest.approx(
        fsdp.parts["weights"] + fsdp.parts["gradients"] + fsdp.parts["optimizer"])
    fp32 = plan_worker(counts, SHAPE, Workload(4, 16, False, lean=False), "ddp")
    assert fp32.parts["weights"] == 8010 * FP32 and "logits" not in fp32.parts
    assert fp32.parts["activations"] == 2 * ACTIVATIONS  # fp32 compute


def test_quantized_weights_count_at_nf4():
    plan = plan_worker(ParameterCounts(trainable=0, frozen=100, quantized=6400), SHAPE, LEAN, "ddp")
    assert plan.parts["weights"] == 100 * BF16 + 6400 * NF4_BYTES == 100 * 2 + 6400 * 0.5 + 400


def test_a_4bit_base_is_whole_on_every_fsdp_worker():
    counts = ParameterCounts(trainable=64, frozen=100, quantized=6400)
    fsdp = plan_worker(counts, SHAPE, LEAN, "fsdp", workers=4)
    assert fsdp.parts["weights"] == pytest.approx((64 * FP32 + 100 * BF16) / 4 + 6400 * NF4_BYTES)
    offloaded = plan_worker(counts, SHAPE, LEAN, "fsdp", workers=4, cpu_offload=True)
    assert offloaded.parts["weights"] == 6400 * NF4_BYTES


def test_a_strategy_is_checked():
    with pytest.raises(ValueError):
        plan_worker(ParameterCounts(1, 1), SHAPE, LEAN, "zero3")
    with pytest.raises(ValueError):
        plan_worker(ParameterCounts(1, 1), SHAPE, LEAN, "ddp", cpu_offload=True)


@pytest.mark.parametrize("method", ["full", "lora", "prompt", "qlora", "vera"])
def test_counts_on_the_meta_device_match_the_real_model(method, tiny_causal):
    """The plan counts without weights; the trainer's real model (weights loaded, method applied) has as many."""
    from peftsweep.spaces import REGISTRY
    from peftsweep.trainers.model import load_model_config

    spec = REGISTRY[method]
    config = load_model_config(tiny_causal)
    counts = count_parameters(config, spec, spec.defaults(), GENERATE)
    if spec.quantized:  # its unquantized form's counts (QLoRA: LoRA's), the block linear weights quantized
        lora = count_parameters(config, REGISTRY[spec.unquantized], spec.defaults(), GENERATE)
        assert counts.trainable == lora.trainable and counts.quantized > 0
        assert counts.quantized + counts.frozen == lora.frozen
        return
    from peftsweep.trainers.model import build_model

    model, _, _ = build_model(tiny_causal, method, spec.defaults(), [], task=GENERATE)
    real = list(model.parameters())
    assert counts.trainable == sum(p.numel() for p in real if p.requires_grad)
    assert counts.total == sum(p.numel() for p in real)
    assert 0 < counts.largest_block < counts.total and counts.root > 0


def test_every_quantized_method_names_its_unquantized_form():
    from peftsweep.spaces import REGISTRY

    for spec in REGISTRY.values():
        if spec.quantized:
            assert spec.unquantized in REGISTRY and not REGISTRY[spec.unquantized].quantized
