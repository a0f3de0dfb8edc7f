"""Generation data: (prompt, target) pairs from two columns, or from a template over a classification data set, then
tokenized once for the whole sweep (see trainers.generation for how they are trained on and scored)."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any

import pandas as pd

from peftsweep.errors import UserError
from peftsweep.spaces import TaskName
from peftsweep.trainers.data import SPLITS, DataSpec, TokenizedData, load_splits, pad_id

DEFAULT_LENGTH_CAP = 1024  # longest example kept when data.max_length is not set (and the model allows it)


@dataclass
class GenerationSplit:
    prompt_ids: list[list[int]]
    target_ids: list[list[int]]  # the target's tokens, then the end-of-sequence token
    targets: list[str]  # the reference answers, as text
    # the options `choice` scoring ranks (the template's label words, or data.choices_column), as text and tokens
    options: list[list[str]] | None = None
    option_ids: list[list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.targets)


def template_fields(template: str) -> list[str]:
    """The column names a template's `{placeholders}` use."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def template_problems(template: str) -> list[str]:
    try:
        fields = template_fields(template)
    except ValueError as exc:  # an unmatched brace
        return [f"data.template: {exc} in {template!r}"]
    problems = [f"data.template: {{{f}}} is not a plain column name" for f in fields if not f.isidentifier()]
    if not fields:
        problems.append(f"data.template: names no column (e.g. {{text}}) in {template!r}")
    return problems


def columns_for(spec: DataSpec) -> dict[str, str]:
    """Which data columns generation reads, as {name used here: column in the data}."""
    if spec.template is not None:
        return {field: field for field in template_fields(spec.template)} | {"label": spec.label_column}
    choices = {"choices": spec.choices_column} if spec.choices_column else {}
    return {"prompt_text": spec.prompt_column, "target_text": spec.target_column} | choices


def options_of(value: Any) -> list[str] | None:
    """One example's options: a list (JSON, Parquet) or its JSON text (CSV); None when it is neither."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(isinstance(v, (str, int, float)) for v in value):
        return None
    return [str(v) for v in value]


def example_options(frame: pd.DataFrame, spec: DataSpec, label_words: list[str], split: str,
                    targets: list[str], problems: list[str]) -> list[list[str]] | None:
    """Each example's options: the label words (template), data.choices_column's (every target among its own), or
    None (no options: choice scoring was refused at validation)."""
    if spec.template is not None:
        return [label_words] * len(frame)
    if not spec.choices_column:
        return None
    options = [options_of(v) for v in frame["choices"]]
    bad = sum(o is None for o in options)
    if bad:
        problems.append(f"data.choices_column: {bad} row(s) of the {split} split hold no list of options (a list, or "
                        f"its JSON text such as [\"yes\", \"no\"])")
        return None
    missing = sum(t.strip() not in [o.strip() for o in opts] for t, opts in zip(targets, options))
    if missing:
        problems.append(f"data.choices_column: in {missing} row(s) of the {split} split the target is not one of "
                        f"the options")
    return options


def prompts_and_targets(frame: pd.DataFrame, spec: DataSpec, label_words: list[str]) -> tuple[list[str], list[str]]:
    if spec.template is not None:
        records = frame.to_dict("records")
        prompts = [spec.template.format(**{k: v for k, v in row.items() if k != "label"}) for row in records]
        return prompts, [label_words[int(row["label"])] for row in records]
    return (frame["prompt_text"].fillna("").astype(str).tolist(),
            frame["target_text"].fillna("").astype(str).tolist())


def chat_prompts(tokenizer: Any, prompts: list[str]) -> list[str]:
    """Each prompt as the user's turn of the model's chat template, ready for the assistant's answer."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def option_tokens(tokenizer: Any, options: list[list[str]] | None, separator: str) -> list[list[list[int]]] | None:
    """Each option's tokens as it would follow the prompt (the separator first, no end-of-sequence token: an option
    is scored as a continuation); options shared by every example are tokenized once."""
    if options is None:
        return None
    cache: dict[str, list[int]] = {}
    texts = sorted({o for opts in options for o in opts})
    for text, ids in zip(texts, tokenizer([separator + t for t in texts], add_special_tokens=False)["input_ids"]):
        cache[text] = ids
    return [[cache[o] for o in opts] for opts in options]


def tokenize_generation(spec: DataSpec, tokenizer: Any, max_positions: int) -> TokenizedData:
    """Load, split, check and tokenize prompts and targets. Prompts too long for `max_length` lose their start (their
    end holds the question the target answers); a target that cannot fit is an error."""
    problems = template_problems(spec.template) if spec.template is not None else []
    if spec.chat_template and not getattr(tokenizer, "chat_template", None):
        problems.append("data.chat_template: the model's tokenizer has no chat template")
    if tokenizer.eos_token_id is None:
        problems.append("model: the tokenizer has no end-of-sequence token, which generation needs to stop")
    if problems:
        raise UserError(problems, "the data does not match the config")
    splits, names, _ = load_splits(spec, columns_for(spec), encode=spec.template is not None)
    words = list(spec.label_words) if spec.label_words else names
    if spec.template is not None and len(words) != len(names):
        raise UserError(f"data.label_words: {len(words)} words for {len(names)} classes {names[:20]}")
    separator = "" if spec.chat_template else " "  # a plain prompt is followed by a space, then the answer
    texts = {name: prompts_and_targets(frame, spec, words) for name, frame in splits.items()}
    empty = {name: sum(not t.strip() for t in targets) for name, (_, targets) in texts.items()}
    problems = [f"data: {n} empty target(s) in the {name} split" for name, n in empty.items() if n]
    eos = int(tokenizer.eos_token_id)
    options = {name: example_options(splits[name], spec, words, name, texts[name][1], problems) for name in SPLITS}
    option_ids = {name: option_tokens(tokenizer, opts, separator) for name, opts in options.items()}
    tokenized, longest = {}, 0
    for name in SPLITS:
        prompts, targets = texts[name]
        if spec.chat_template:
            prompts = chat_prompts(tokenizer, prompts)
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        target_ids = [ids + [eos] for ids in tokenizer([separator + t for t in targets],
                                                          add_special_tokens=False)["input_ids"]]
        tokenized[name] = (prompt_ids, target_ids, targets)
        longest = max([longest] + [len(p) + len(t) for p, t in zip(prompt_ids, target_ids)])
    cap = min(max_positions or DEFAULT_LENGTH_CAP, DEFAULT_LENGTH_CAP)
    max_length = spec.max_length or min(longest, cap)
    if max_positions and max_length > max_positions:
        problems.append(f"data.max_length: {max_length} exceeds the model's {max_positions} positions")
    for name, (prompt_ids, target_ids, _) in tokenized.items():
        too_long = [i for i, t in enumerate(target_ids) if len(t) >= max_length]
        if too_long:
            worst = max(len(target_ids[i]) for i in too_long)
            problems.append(f"data: {len(too_long)} target(s) in the {name} split do not fit data.max_length "
                            f"{max_length} with room for a prompt (the longest is {worst} tokens with its "
                            f"end-of-sequence token); raise data.max_length or shorten them")
    if problems:
        raise UserError(problems, "the data does not match the config")
    splits_out = {}
    for name, (prompt_ids, target_ids, targets) in tokenized.items():
        # a prompt keeps its end, with room for its target (and for its longest option, which choice scoring appends)
        room = [len(t) if option_ids[name] is None else max([len(t)] + [len(o) for o in option_ids[name][i]])
                for i, t in enumerate(target_ids)]
        splits_out[name] = GenerationSplit(prompt_ids=[p[max(0, len(p) - (max_length - r)):]
                                                       for p, r in zip(prompt_ids, room)],
                                           target_ids=target_ids, targets=targets, options=options[name],
                                           option_ids=option_ids[name])
    longest_target = max(len(t) for split in splits_out.values() for t in split.target_ids)
    return TokenizedData(splits=splits_out, label_names=words if spec.template is not None else [],
                         pad_token_id=pad_id(tokenizer), max_length=max_length, task=TaskName.GENERATION,
                         eos_token_id=eos, max_new_tokens=longest_target)
