"""FSDP2 against DDP on two gloo ranks (tests/trainers/sharded_run.py): the same losses step by step, the same
evaluation, half the bytes per rank, an exact restart from the sharded training state, the same method files."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

from peftsweep.spaces import REGISTRY
from peftsweep.trainers.data import DataSpec
from peftsweep.trainers.launch import prepare_data
from peftsweep.trainers.forgetting import text_chunks
from peftsweep.trainers.model import load_tokenizer
from tests.tiny import ANSWER_TEMPLATE, CLASSIFY, FILLER, GENERATE
from tests.trainers.sharded_run import Case, run_two_ranks

# Both strategies compute the same sums in another order (reduce-scatter of shards against one all-reduce): the
# losses agree to float32 rounding, grown a little by AdamW over the steps.
LOSS_TOLERANCE = 1e-4
LEAN_TOLERANCE = 2e-2  # bf16 weights and compute

METHODS = {  # full fine-tuning, an adapter, a soft prompt (frozen and trainable parameters in one shard group), and
    # LoRA on a 4-bit base (its 4-bit weights left out of the shards, whole on each rank)
    "full": {"lr": 1e-3},
    "lora": {"r": 4, "alpha_multiple": 2, "dropout": 0.0, "targets": "attention", "lr": 1e-2},
    "prompt": {"num_virtual_tokens": 4, "lr": 3e-2},
    "qlora": {"r": 4, "alpha_multiple": 2, "dropout": 0.0, "targets": "attention", "lr": 1e-2},
}
SHARDS_EVERYTHING = [m for m in METHODS if m != "qlora"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_decoder, tiny_causal, tiny_csv):
    classes = prepare_data(tiny_decoder, DataSpec(train_file=tiny_csv, max_length=16, seed=0), task=CLASSIFY)
    answers = prepare_data(tiny_causal, DataSpec(train_file=tiny_csv, template=ANSWER_TEMPLATE, seed=0),
                           task=GENERATE)
    # forgetting measured on filler text (trainers.forgetting): every rank runs every chunk, FSDP as DDP
    rng = random.Random(3)
    filler = " ".join(rng.choices(FILLER, k=200))
    answers = dataclasses.replace(answers, general_text=text_chunks(load_tokenizer(tiny_causal), filler, 24, 200))
    scratch = tmp_path_factory.mktemp("fsdp")
    cases = []
    for task, model, data in (("classification", tiny_decoder, classes), ("generation", tiny_causal, answers)):
        for method, hparams in METHODS.items():
            for strategy in ("ddp", "fsdp"):
                cases.append(Case(f"{task}-{method}-{strategy}", model, method, hparams, task, data, strategy,
                                  save_to=str(scratch / f"{task}-{method}-{strategy}-files")))
    cases.append(Case("classification-lora-fsdp-restart", tiny_decoder, "lora", METHODS["lora"], "classification",
                      classes, "fsdp", restart_after=2))
    for strategy in ("ddp", "fsdp"):  # an evaluation between two steps (as between epochs): the head is the root's
        cases.append(Case(f"evaluated-classification-lora-{strategy}", tiny_decoder, "lora", METHODS["lora"],
                          "classification", classes, strategy, evaluate_after=1))
        cases.append(Case(f"evaluated-generation-full-{strategy}", tiny_causal, "full", METHODS["full"],
                          "generation", answers, strategy, evaluate_after=1))
    for strategy in ("ddp", "fsdp"):  # lean: frozen weights in bf16, trainable ones fp32, bf16 compute
        cases.append(Case(f"lean-lora-{strategy}", tiny_decoder, "lora", METHODS["lora"], "classification", classes,
                          strategy, precision="bf16"))
    for name, hparams in every_method():  # the registry's contract: each method, each task kind it does
        for task, model, data in (("classification", tiny_decoder, classes), ("generation", tiny_causal, answers)):
            if task in REGISTRY[name.split("-")[0]].tasks:
                for strategy in ("ddp", "fsdp"):
                    cases.append(Case(f"every-{task}-{name}-{strategy}", model, name.split("-")[0], hparams, task,
                                      data, strategy, steps=2))
    ranks = run_two_ranks(cases, scratch)
    return ranks, scratch, classes


def every_method() -> list[tuple[str, dict]]:
    """Each registered method at its smallest sizes and default choices, LoRA on both target sets."""
    from peftsweep.search.orchestration.space import default_point

    points = [(name, default_point(spec, smallest=True)) for name, spec in REGISTRY.items()]
    return points + [("lora-all_linear", default_point(REGISTRY["lora"], smallest=True) | {"targets": "all_linear"})]


@pytest.mark.parametrize("task", ["classification", "generation"])
@pytest.mark.parametrize("method", list(METHODS))
def test_fsdp_trains_and_evaluates_as_ddp(runs, task, method):
    ranks, _, _ = runs
    ddp, fsdp = ranks[0][f"{task}-{method}-ddp"], ranks[0][f"{task}-{method}-fsdp"]
    assert len(fsdp["losses"]) == 4
    assert fsdp["losses"][-1] != fsdp["losses"][0]  # it trained
    for step, (a, b) in enumerate(zip(ddp["losses"], fsdp["losses"])):
        assert abs(a - b) <= LOSS_TOLERANCE, f"step {step}: ddp {a} fsdp {b}"
    assert fsdp["eval"]["accuracy"] == ddp["eval"]["accuracy"]
    extra = "loss" if task == "generation" else "macro_f1"
    assert math.isclose(fsdp["eval"][extra], ddp["eval"][extra], abs_tol=1e-4)
    if task == "generation":  # forgetting: the base before the first step, the model after (adapter disabled)
        assert set(fsdp["forgetting"]) == {"forgetting", "general_loss", "base_general_loss"}
        for name, value in ddp["forgetting"].items():
            assert math.isclose(fsdp["forgetting"][name], value, abs_tol=1e-4), name
        assert ddp["forgetting"]["forgetting"] != 0.0  # it trained
    # the counts are the whole model's under either strategy
    assert fsdp["counts"] == ddp["counts"] and fsdp["counts"]["trainable_params"] > 0
    # both ranks saw the same evaluation (the sums are all-reduced), whatever the padding of the shorter shard
    assert ranks[1][f"{task}-{method}-fsdp"]["eval"] == fsdp["eval"]


@pytest.mark.parametrize("method", SHARDS_EVERYTHING)
def test_each_rank_holds_about_half_of_ddp(runs, method):
    ranks, _, _ = runs
    for task in ("classification", "generation"):
        ddp, fsdp = ranks[0][f"{task}-{method}-ddp"], ranks[0][f"{task}-{method}-fsdp"]
        held = {k: fsdp[k] / ddp[k] for k in ("param_bytes", "grad_bytes", "optimizer_bytes") if ddp[k]}
        total = sum(fsdp[k] for k in held) / sum(ddp[k] for k in held)
        assert abs(total - 0.5) <= 0.05, (task, held)


def test_a_restart_from_the_sharded_state_is_exact(runs):
    ranks, _, _ = runs
    whole, restarted = ranks[0]["classification-lora-fsdp"], ranks[0]["classification-lora-fsdp-restart"]
    assert restarted["losses"] == pytest.approx(whole["losses"], abs=1e-6)


def test_lean_weights_halve_the_frozen_bytes_and_train_alike(runs):
    ranks, _, _ = runs
    fp32, ddp, fsdp = (ranks[0][k] for k in ("classification-lora-ddp", "lean-lora-ddp", "lean-lora-fsdp"))
    assert ddp["param_bytes"] < 0.55 * fp32["param_bytes"]  # the frozen base in bf16, the adapters fp32
    assert ddp["optimizer_bytes"] == fp32["optimizer_bytes"]  # AdamW's moments of fp32 adapters
    for a, b in zip(ddp["losses"], fsdp["losses"]):
        assert abs(a - b) <= LEAN_TOLERANCE


@pytest.mark.parametrize("method", list(METHODS))
def test_the_method_files_from_shards_match_ddps(runs, method, tiny_decoder):
    """Rank 0 writes the method's files from the gathered trained tensors; the model they rebuild is the same as
    the one DDP's files rebuild (within the tolerance of the two trainings)."""
    from peftsweep.trainers.checkpoint import load_checkpoint

    ranks, scratch, classes = runs
    models = [load_checkpoint(scratch / f"classification-{method}-{s}-files")[0] for s in ("ddp", "fsdp")]
    ids = torch.tensor([classes.splits["validation"].input_ids[0]])
    with torch.no_grad():
        logits = [m(input_ids=ids).logits for m in models]
    assert torch.allclose(logits[0], logits[1], atol=1e-3), (logits[0], logits[1])


def test_a_4bit_base_stays_whole_on_each_rank(runs):
    ranks, _, _ = runs
    for task in ("classification", "generation"):
        ddp, fsdp = ranks[0][f"{task}-qlora-ddp"], ranks[0][f"{task}-qlora-fsdp"]
        assert 0.5 * ddp["param_bytes"] < fsdp["param_bytes"] < ddp["param_bytes"]  # the rest is sharded
        assert fsdp["optimizer_bytes"] == pytest.approx(ddp["optimizer_bytes"] / 2, rel=0.1)


@pytest.mark.parametrize("method", SHARDS_EVERYTHING)
def test_the_memory_plan_matches_what_each_rank_holds(runs, method, tiny_decoder):
    """The plan's weights + gradients + optimizer against the bytes rank 0 holds, under DDP and FSDP (2 workers)."""
    from peftsweep.spaces import get_method
    from peftsweep.trainers.memory_plan import ModelShape, Workload, count_parameters, plan_worker
    from peftsweep.trainers.model import load_model_config

    ranks, _, classes = runs
    config = load_model_config(tiny_decoder)
    counts = count_parameters(config, get_method(method), METHODS[method], CLASSIFY,
                              tuple(classes.label_names))
    for strategy in ("ddp", "fsdp"):
        plan = plan_worker(counts, ModelShape.from_config(config), Workload(4, 16, False, lean=False), strategy, 2)
        planned = plan.parts["weights"] + plan.parts["gradients"] + plan.parts["optimizer"]
        held = ranks[0][f"classification-{method}-{strategy}"]
        measured = held["param_bytes"] + held["grad_bytes"] + held["optimizer_bytes"]
        assert measured == pytest.approx(planned, rel=0.05), (strategy, measured, planned)


def test_every_method_trains_under_fsdp_as_under_ddp(runs):
    """Every registered method (LoRA on both target sets), for each task kind it does: two steps and an evaluation
    under FSDP give DDP's losses and accuracy."""
    ranks, _, _ = runs
    keys = sorted(k.removesuffix("-fsdp") for k in ranks[0] if k.startswith("every-") and k.endswith("-fsdp"))
    assert len(keys) >= 2 * len(REGISTRY)  # every method, both task kinds where it does them
    for key in keys:
        ddp, fsdp = ranks[0][f"{key}-ddp"], ranks[0][f"{key}-fsdp"]
        assert all(math.isfinite(x) for x in fsdp["losses"]), key
        for a, b in zip(ddp["losses"], fsdp["losses"]):
            assert abs(a - b) <= LOSS_TOLERANCE, (key, ddp["losses"], fsdp["losses"])
        assert fsdp["eval"]["accuracy"] == ddp["eval"]["accuracy"], key
        assert fsdp["counts"] == ddp["counts"], key


@pytest.mark.parametrize("case", ["classification-lora", "generation-full"])
def test_training_after_an_evaluation_goes_on_as_ddp(runs, case):
    """FSDP2 keeps the root's parameters gathered after a forward pass with no backward (an evaluation); unless they
    are freed (trainers.sharding.reshard), the next step misses the root's update (the head, the embeddings) and the
    losses leave DDP's two steps later."""
    ranks, _, _ = runs
    ddp, fsdp = ranks[0][f"evaluated-{case}-ddp"], ranks[0][f"evaluated-{case}-fsdp"]
    assert len(fsdp["losses"]) == 4
    for step, (a, b) in enumerate(zip(ddp["losses"], fsdp["losses"])):
        assert abs(a - b) <= LOSS_TOLERANCE, f"step {step}: ddp {a} fsdp {b}"
