"""The generation task kind on a tiny random Llama causal LM: batches, loss, generation, exact match, every method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peftsweep.errors import UserError
from peftsweep.spaces import REGISTRY
from peftsweep.trainers.checkpoint import load_checkpoint, save_checkpoint
from peftsweep.trainers.config import TrainSettings
from peftsweep.trainers.data import DataSpec
from peftsweep.trainers.generation import (IGNORE_INDEX, collate_train, evaluate, exact_match, generate, normalize,
                                           train_loader)
from peftsweep.trainers.launch import prepare_data
from peftsweep.trainers.loop import optimizer_for, train_epoch
from peftsweep.trainers.model import build_model, load_tokenizer
from tests.tiny import ANSWER_TEMPLATE, GENERATE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gen_data(tiny_causal, tiny_csv):
    return prepare_data(tiny_causal, DataSpec(train_file=tiny_csv, template=ANSWER_TEMPLATE, seed=0),
                        task=GENERATE)


def test_exact_match_normalises_case_space_and_ends():
    assert normalize("  The   Fruit \n") == "the fruit"
    assert exact_match(" Fruit", "fruit") and exact_match("fruit\t", "FRUIT")
    assert not exact_match("fruits", "fruit") and not exact_match("the fruit", "fruit")
    assert not exact_match(" Fruit", "fruit", "exact") and exact_match("fruit", "fruit", "exact")


def test_tokenized_prompts_and_targets(gen_data, tiny_causal):
    tokenizer = load_tokenizer(tiny_causal)
    split = gen_data.splits["train"]
    assert gen_data.task == "generation" and gen_data.label_names == ["fruit", "machine", "nature"]
    for prompt, target, text in zip(split.prompt_ids, split.target_ids, split.targets):
        assert target[-1] == tokenizer.eos_token_id == gen_data.eos_token_id
        assert tokenizer.decode(target[:-1]) == text  # the answer word, then end-of-sequence
        assert tokenizer.decode(prompt).endswith("type :")  # the template; no [CLS]/[SEP] around it
    assert gen_data.max_new_tokens == max(len(t) for s in gen_data.splits.values() for t in s.target_ids)


def test_loss_covers_target_tokens_only(tiny_causal):
    """A hand-made batch: labels are -100 on prompt and padding; the model's loss equals cross-entropy over the
    target positions alone."""
    batch = collate_train(pad_token_id=0)([([5, 6, 7], [8, 3]), ([9, 10], [11, 12, 3])])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 3], [9, 10, 11, 12, 3]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX] * 3 + [8, 3], [IGNORE_INDEX] * 2 + [11, 12, 3]]
    short = collate_train(pad_token_id=0)([([5, 6], [8, 3]), ([9, 10, 4, 4], [11, 12, 3])])
    assert short["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0] and short["labels"][0, 4:].tolist() == [
        IGNORE_INDEX] * 3
    model, _, _ = build_model(tiny_causal, "full", {"lr": 1e-3}, [], task=GENERATE)
    with torch.no_grad():
        out = model(**batch)
    logits = out.logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    by_hand = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert keep.sum().item() == 5  # 2 + 3 target tokens (end-of-sequence included), nothing of the prompts
    assert out.loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def answers(model, data, n: int | None = None) -> list[list[int]]:
    return generate(model, data.splits["validation"].prompt_ids[:n], pad_token_id=data.pad_token_id,
                    eos_token_id=data.eos_token_id, max_new_tokens=data.max_new_tokens, batch_size=5, device=CPU)


def mean_loss(model, data) -> float:
    batch = collate_train(data.pad_token_id)(list(zip(data.splits["train"].prompt_ids[:32],
                                                      data.splits["train"].target_ids[:32])))
    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item()


def small(spec) -> dict:
    hp = spec.defaults()
    return hp | ({"num_virtual_tokens": 4} if "num_virtual_tokens" in hp else {})


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_learns_generates_and_reloads(name, tiny_causal, gen_data, tmp_path: Path):
    spec = REGISTRY[name]
    hp = small(spec)
    torch.manual_seed(0)
    model, counts, _ = build_model(tiny_causal, name, hp, gen_data.label_names, task=GENERATE)
    assert counts.head_params == 0  # a causal LM gets no new head: its output layer is pre-trained
    before = mean_loss(model, gen_data)
    settings = TrainSettings(batch_size=8, warmup_ratio=0.0)
    loader = train_loader(gen_data.splits["train"], 8, gen_data.pad_token_id, seed=0)
    optimizer, scheduler = optimizer_for(model, hp["lr"], settings, total_steps=100)
    train_epoch(model, loader, optimizer, scheduler, settings, CPU, max_steps=8)
    after = mean_loss(model, gen_data)
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f}"

    generated = answers(model, gen_data)
    assert len(generated) == len(gen_data.splits["validation"])
    assert all(len(ids) <= gen_data.max_new_tokens for ids in generated)
    save_checkpoint(model, tmp_path, model_name=tiny_causal, method=name, hparams=hp,
                    label_names=gen_data.label_names, max_length=gen_data.max_length, counts=counts, epoch=1,
                    task=GENERATE)
    reloaded, manifest = load_checkpoint(tmp_path)
    assert manifest["task"] == "generation"
    assert answers(reloaded, gen_data) == generated  # the KV-cache generation of the reloaded model is the same


def test_evaluate_counts_exact_matches(tiny_causal, gen_data):
    """The count is over what was decoded, whatever the model generated: a decoder that reads the right answer for
    the first k examples (in capitals between spaces: the normalised match takes it, the exact one does not) and a wrong one for the rest scores k/n; the loss is the target's, not zero."""
    model, _, _ = build_model(tiny_causal, "full", {"lr": 1e-3}, [], task=GENERATE)
    split = gen_data.splits["validation"]
    n, k = len(split), len(split) // 3
    assert 0 < k < n

    def accuracy(match: str) -> float:
        decoded = iter([f" {t.upper()}  " for t in split.targets[:k]] + ["no such answer"] * (n - k))
        return evaluate(model, split, decode=lambda ids: next(decoded), pad_token_id=gen_data.pad_token_id,
                        eos_token_id=gen_data.eos_token_id, max_new_tokens=2, batch_size=7, device=CPU,
                        match=match)["accuracy"]

    assert accuracy("normalized") == k / n and accuracy("exact") == 0.0
    tokenizer = load_tokenizer(tiny_causal)
    result = evaluate(model, split, decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                      pad_token_id=gen_data.pad_token_id, eos_token_id=gen_data.eos_token_id,
                      max_new_tokens=gen_data.max_new_tokens, batch_size=7, device=CPU)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["loss"] > 0


def test_bad_generation_inputs_are_named(tiny_causal, tiny_model, tiny_csv, tmp_path):
    with pytest.raises(UserError) as missing:
        prepare_data(tiny_causal, DataSpec(train_file=tiny_csv), task=GENERATE)
    assert "prompt" in str(missing.value) and "data.prompt_column" in str(missing.value)
    with pytest.raises(UserError) as unknown:
        prepare_data(tiny_causal, DataSpec(train_file=tiny_csv, template="{question} type:"), task=GENERATE)
    assert "question" in str(unknown.value) and "data.template" in str(unknown.value)
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt,target\n" + "".join(f"q{i},{'' if i % 3 == 0 else 'a'}\n" for i in range(40)))
    with pytest.raises(UserError) as empties:
        prepare_data(tiny_causal, DataSpec(train_file=str(empty)), task=GENERATE)
    assert "empty target" in str(empties.value)
    with pytest.raises(UserError) as long_target:
        prepare_data(tiny_causal, DataSpec(train_file=tiny_csv, template=ANSWER_TEMPLATE, max_length=2),
                     task=GENERATE)
    assert "do not fit data.max_length" in str(long_target.value)


def _evaluate_on_rank(rank: int, world: int, port: int, model_dir: str, data, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, _, _ = build_model(model_dir, "lora", REGISTRY["lora"].defaults(), [], task=GENERATE)
    tokenizer = load_tokenizer(model_dir)
    result = evaluate(model, data.splits["validation"], decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                      pad_token_id=data.pad_token_id, eos_token_id=data.eos_token_id,
                      max_new_tokens=data.max_new_tokens, batch_size=4, device=CPU)
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


def test_two_process_evaluation_equals_one_process(tiny_causal, gen_data, tmp_path):
    """Each rank generates its shard; the summed counts give exactly the single-process accuracy (and loss)."""
    import time

    import torch.multiprocessing as mp

    trained = tmp_path / "model"
    torch.manual_seed(3)
    model, _, _ = build_model(tiny_causal, "full", {"lr": 1e-2}, [], task=GENERATE)
    settings = TrainSettings(batch_size=8, warmup_ratio=0.0)
    optimizer, scheduler = optimizer_for(model, 1e-2, settings, total_steps=44)
    for epoch in range(4):  # a model that gets some answers right and some wrong
        train_epoch(model, train_loader(gen_data.splits["train"], 8, gen_data.pad_token_id, epoch), optimizer,
                    scheduler, settings, CPU)
    model.save_pretrained(trained)
    load_tokenizer(tiny_causal).save_pretrained(trained)
    from tests.services import free_port

    processes = mp.start_processes(_evaluate_on_rank, args=(2, free_port(), str(trained), gen_data,
                                                            str(tmp_path / "ddp.pt")), nprocs=2, join=False)
    deadline = time.monotonic() + 300  # bounded: a rank that never joins the other fails the test, not CI
    while not processes.join(timeout=5):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail("the two evaluation processes did not finish within 300 s")
    ddp = torch.load(tmp_path / "ddp.pt")
    torch.manual_seed(0)
    single_model, _, _ = build_model(str(trained), "lora", REGISTRY["lora"].defaults(), [], task=GENERATE)
    tokenizer = load_tokenizer(str(trained))
    single = evaluate(single_model, gen_data.splits["validation"],
                      decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                      pad_token_id=gen_data.pad_token_id, eos_token_id=gen_data.eos_token_id,
                      max_new_tokens=gen_data.max_new_tokens, batch_size=4, device=CPU)
    assert 0 < single["accuracy"] < 1, single  # neither all right nor all wrong: the sum is a real check
    assert ddp["accuracy"] == single["accuracy"]
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-6)


def test_chat_template_wraps_each_prompt_when_asked(tiny_causal, tiny_csv, tmp_path):
    import shutil

    chat_model = tmp_path / "chat"
    shutil.copytree(tiny_causal, chat_model)
    tokenizer = load_tokenizer(str(chat_model))
    tokenizer.chat_template = ("{% for m in messages %}{{ m.role }} : {{ m.content }}{% endfor %}"
                               "{% if add_generation_prompt %} type :{% endif %}")
    tokenizer.save_pretrained(chat_model)
    spec = dict(train_file=tiny_csv, template="{text}", seed=0)
    plain = prepare_data(str(chat_model), DataSpec(**spec), task=GENERATE)
    chat = prepare_data(str(chat_model), DataSpec(**spec, chat_template=True), task=GENERATE)
    for before, after in zip(plain.splits["train"].prompt_ids, chat.splits["train"].prompt_ids):
        assert tokenizer.decode(after) == f"[UNK] : {tokenizer.decode(before)} type :"  # "user" is not in the vocab
    assert chat.splits["train"].target_ids == plain.splits["train"].target_ids


def test_task_kinds_agree_between_methods_and_trainers():
    from peftsweep.spaces import TASK_KINDS
    from peftsweep.trainers.tasks import TASKS

    assert set(TASK_KINDS) == set(TASKS)
    assert all(set(spec.tasks) <= set(TASK_KINDS) for spec in REGISTRY.values())


def test_one_denominator_with_tied_embeddings_counted_once(tiny_causal):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, as in SmolLM2
    config = model.config
    h, i, v, layers = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    kv = h // config.num_attention_heads * config.num_key_value_heads
    by_hand = v * h + layers * (h * h + 2 * h * kv + h * h + 3 * h * i + 2 * h) + h  # embeddings once; norms
    bases = {name: build_model(tiny_causal, name, small(REGISTRY[name]), [], task=GENERATE)[1].base_params
             for name in REGISTRY}
    assert set(bases.values()) == {by_hand}, bases


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_zero_shot_floor_runs_the_base_in_bf16_where_training_computes_in_it(monkeypatch, tiny_causal, gen_data,
                                                                                  precision, dtype):
    from types import SimpleNamespace

    from peftsweep.trainers import generation
    from peftsweep.trainers.config import GenerationSettings, TrainSettings

    seen = []
    monkeypatch.setattr(generation, "evaluate",
                        lambda model, *a, **k: seen.append(next(model.parameters()).dtype) or {"accuracy": 0.0})
    template = SimpleNamespace(model=tiny_causal, trust_remote_code=False, train=TrainSettings(precision=precision),
                               generation=GenerationSettings())
    assert generation.zero_shot_floor(gen_data, template, torch.device("cpu")) == {"validation": 0.0, "test": 0.0}
    assert seen == [dtype, dtype]
