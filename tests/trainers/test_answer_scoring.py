"""Generation scoring (trainers.answer_scoring): `choice` against a log-likelihood ranking computed here, one example
and one option at a time; `extract` on hand-made generations; the settings and data each needs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from peftsweep.errors import UserError
from peftsweep.spaces import REGISTRY
from peftsweep.trainers.answer_scoring import (cached_option_loglikelihoods, choose, extract_answer, extracted_target,
                                              option_loglikelihoods, shares_prompt_cache)
from peftsweep.trainers.config import GenerationSettings
from peftsweep.trainers.data import DataSpec
from peftsweep.trainers.generation import data_problems, evaluate
from peftsweep.trainers.launch import prepare_data
from peftsweep.trainers.model import build_model, load_tokenizer
from tests.tiny import ANSWER_TEMPLATE, GENERATE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gen_data(tiny_causal, tiny_csv):
    return prepare_data(tiny_causal, DataSpec(train_file=tiny_csv, template=ANSWER_TEMPLATE, seed=0), task=GENERATE)


@pytest.fixture(scope="module")
def model(tiny_causal):
    torch.manual_seed(0)
    built, _, _ = build_model(tiny_causal, "full", {"lr": 1e-3}, [], task=GENERATE)
    return built.eval()


def by_hand(model, prompt: list[int], option: list[int]) -> float:
    """log P(option | prompt), one unpadded sequence: the sum of each option token's log-softmax."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + option])).logits[0]
    logits = logits[len(logits) - len(prompt + option):]  # prompt tuning's virtual tokens come first
    logp = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(logp[len(prompt) - 1 + k, token]) for k, token in enumerate(option))


def test_choice_scores_equal_a_ranking_by_hand(model, gen_data):
    split = gen_data.splits["validation"]
    assert split.options[0] == gen_data.label_names == ["fruit", "machine", "nature"]
    scores = option_loglikelihoods(model, split.prompt_ids, split.option_ids, pad_token_id=gen_data.pad_token_id,
                                   batch_size=5, device=CPU)  # batches cut across examples, rows padded
    expected = [[by_hand(model, p, o) for o in opts] for p, opts in zip(split.prompt_ids, split.option_ids)]
    assert [len(row) for row in scores] == [len(row) for row in expected]
    assert sum(scores, []) == pytest.approx(sum(expected, []), abs=1e-4)
    for normalized in (False, True):
        picked = []
        for row, opts in zip(expected, split.options):
            values = [s / len(t.encode()) if normalized else s for s, t in zip(row, opts)]
            picked.append(opts[values.index(max(values))])
        right = sum(p == t for p, t in zip(picked, split.targets)) / len(split)
        result = evaluate(model, split, decode=None, pad_token_id=gen_data.pad_token_id,
                          eos_token_id=gen_data.eos_token_id, max_new_tokens=2, batch_size=4, device=CPU,
                          scoring="choice", length_normalized=normalized)
        assert result["accuracy"] == pytest.approx(right)
    # the random model does not always pick one option: the ranking is not a constant
    assert len({tuple(row).index(max(row)) for row in expected}) > 1


@pytest.mark.parametrize("method", ["full", "lora", "prompt", "prefix"])
def test_both_ways_of_scoring_equal_the_ranking_by_hand_with_options_of_several_tokens(tiny_causal, method):
    """Prompts of several lengths (left padding in the cached way), options of 1 to 4 tokens, 2 to 4 per example;
    prompt learning methods take the row way (their virtual tokens come before the prompt), the others the cache."""
    tokenizer = load_tokenizer(tiny_causal)
    words = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [words("the apple is"), words("a very old engine on the river was"), words("it"),
               words("the small red river and the big engine")]
    options = [[words(" big"), words(" very big red"), words(" small")],
               [words(" new"), words(" old and red")],
               [words(" apple"), words(" the river"), words(" a new engine of"), words(" it")],
               [words(" small"), words(" big")]]
    hp = REGISTRY[method].defaults() | ({"num_virtual_tokens": 4} if method in ("prompt", "prefix") else {})
    torch.manual_seed(0)
    peft_model, _, _ = build_model(tiny_causal, method, hp, [], task=GENERATE)
    peft_model.eval()
    assert shares_prompt_cache(peft_model) == (method not in ("prompt", "prefix"))
    expected = [[by_hand(peft_model, p, o) for o in opts] for p, opts in zip(prompts, options)]
    for score in (option_loglikelihoods, cached_option_loglikelihoods) if shares_prompt_cache(peft_model) else (
            option_loglikelihoods,):
        got = score(peft_model, prompts, options, pad_token_id=0, batch_size=3, device=CPU)
        assert sum(got, []) == pytest.approx(sum(expected, []), abs=1e-4), score.__name__


def test_choose_takes_the_highest_and_normalises_by_bytes():
    assert choose([-3.0, -1.0, -2.0], ["a", "b", "c"]) == 1
    assert choose([-1.0, -1.0], ["a", "b"]) == 0  # the first of equals
    assert choose([-4.0, -3.0], ["abcd", "a"], length_normalized=True) == 0  # -1 per byte beats -3


def test_extract_on_hand_made_generations(model, gen_data):
    assert extract_answer("so the answer is 42.", r"answer is (\d+)") == "42"
    assert extract_answer("no number here", r"answer is (\d+)") is None
    assert extract_answer("#### 7", r"####\s*\d+") == "#### 7"  # no group: the whole match
    assert extracted_target("3 + 4 = 7\n#### 7", r"####\s*(\d+)") == "7"
    assert extracted_target("7", r"####\s*(\d+)") == "7"  # a bare target stays as it is

    split = gen_data.splits["validation"]
    n = len(split)
    texts = ([f"I think it is {t}, final: {t.upper()}" for t in split.targets[:3]]  # right, after extraction
             + [f"final: {split.targets[3]}x"]  # extracted but wrong
             + [split.targets[4]]  # the bare answer, but the pattern finds nothing: wrong
             + ["nothing"] * (n - 5))
    decoded = iter(texts)
    result = evaluate(model, split, decode=lambda ids: next(decoded), pad_token_id=gen_data.pad_token_id,
                      eos_token_id=gen_data.eos_token_id, max_new_tokens=1, batch_size=8, device=CPU,
                      scoring="extract", answer_pattern=r"final:\s*(\w+)")
    assert result["accuracy"] == pytest.approx(3 / n)


@pytest.mark.parametrize("settings, message", [
    ({"scoring": "extract"}, "scoring: extract needs generation.answer_pattern"),
    ({"scoring": "extract", "answer_pattern": "(unclosed"}, "answer_pattern: not a regular expression"),
    ({"answer_pattern": r"(\d+)"}, "answer_pattern: only with scoring: extract"),
    ({"length_normalized": True}, "length_normalized: only with scoring: choice"),
])
def test_generation_settings_refuse_what_does_not_fit(settings, message):
    with pytest.raises(ValidationError, match=message):
        GenerationSettings(**settings)


def test_choice_needs_options_and_choices_need_choice():
    columns = DataSpec(train_file="x.csv")
    assert any("generation.scoring: choice needs options" in p
               for p in data_problems(columns, GenerationSettings(scoring="choice")))
    assert data_problems(DataSpec(train_file="x.csv", template="{text}:"), GenerationSettings(scoring="choice")) == []
    with_choices = DataSpec(train_file="x.csv", choices_column="options")
    assert data_problems(with_choices, GenerationSettings(scoring="choice")) == []
    assert any("only read with generation.scoring: choice" in p
               for p in data_problems(with_choices, GenerationSettings()))


def test_a_choices_column_gives_each_example_its_options(tiny_causal, tmp_path, model):
    # words of the toy vocabulary: three options for some examples, four (in another order) for others
    rows = [{"prompt": f"the {['apple', 'river', 'engine'][i % 3]} is", "target": ["big", "small", "red"][i % 3],
             "options": json.dumps(["big", "small", "red"] if i % 2 else ["small", "big", "red", "old"])}
            for i in range(60)]
    path = tmp_path / "qa.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    data = prepare_data(tiny_causal, DataSpec(train_file=str(path), choices_column="options", seed=0), task=GENERATE)
    split = data.splits["validation"]
    tokenizer = load_tokenizer(tiny_causal)
    for options, ids, target in zip(split.options, split.option_ids, split.targets):
        assert target in options and len(options) in (3, 4)
        assert [tokenizer.decode(i).strip() for i in ids] == options
    result = evaluate(model, split, decode=None, pad_token_id=data.pad_token_id, eos_token_id=data.eos_token_id,
                      max_new_tokens=1, batch_size=4, device=CPU, scoring="choice")
    assert 0.0 <= result["accuracy"] <= 1.0

    for change, message in ((("target", "new"), "the target is not one of the options"),
                            (("options", "big or small"), "hold no list of options")):
        broken = [dict(row) for row in rows]
        broken[0][change[0]] = change[1]
        pd.DataFrame(broken).to_csv(path, index=False)
        with pytest.raises(UserError, match=message):
            prepare_data(tiny_causal, DataSpec(train_file=str(path), choices_column="options", seed=0),
                         task=GENERATE)
