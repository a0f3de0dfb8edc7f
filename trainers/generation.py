"""The generation task kind: a causal LM learns to answer a prompt with a target; scored by exact match of its answer
(generated, extracted from the generation, or chosen among options by likelihood: trainers.answer_scoring).

- Data: each example is a prompt and a target, from two columns or from a template over a classification data set
  (the label's word is the target). Prompt and target are tokenized apart (no special tokens; the chat template, when
  asked for, is applied to the prompt as text) and an end-of-sequence token ends every target.
- Training: the prompt followed by the target, right-padded per batch; the loss covers the target tokens (and the
  end-of-sequence token) only.
- Evaluation: greedy generation with the KV cache, batched with left padding, up to `max_new_tokens`; a generation
  is right when, cut at the end-of-sequence token and normalised, it equals the target (`generation.scoring: match`),
  or when the answer a regex extracts from it does (`extract`). `choice` generates nothing: the option with the
  highest log-likelihood is the answer. Each rank generates its shard
  (every world_size-th example) and the counts are summed across ranks. The validation loss is the same
  target-only loss as in training.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from peftsweep.metric_names import GENERATION_SAMPLES_PER_SECOND
from peftsweep.spaces import TaskName
from peftsweep.trainers.answer_scoring import (Scoring, cached_option_loglikelihoods, choose, extract_answer,
                                              extracted_target, option_loglikelihoods, shares_prompt_cache)
from peftsweep.trainers.batching import LengthGroupedBatches, by_length
from peftsweep.trainers.data import TokenizedData
from peftsweep.trainers.generation_data import GenerationSplit, tokenize_generation
from peftsweep.trainers.sharding import shard_rows
from peftsweep.trainers.task_kind import EvalContext, MatchRule, TaskKind

IGNORE_INDEX = -100  # label positions the loss skips (prompt and padding)


def normalize(text: str, rule: MatchRule = "normalized") -> str:
    """`normalized`: strip, case-fold, collapse runs of whitespace to one space; `exact`: the text as it is."""
    return text if rule == "exact" else re.sub(r"\s+", " ", text.strip().casefold())


def exact_match(generated: str, target: str, rule: MatchRule = "normalized") -> bool:
    return normalize(generated, rule) == normalize(target, rule)


def collate_train(pad_token_id: int):
    """Prompt + target per row, right-padded to the batch's longest; labels only on the target."""

    def pad(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(p) + len(t) for p, t in batch)
        input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, (prompt, target) in enumerate(batch):
            ids = prompt + target
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention_mask[row, :len(ids)] = 1
            labels[row, len(prompt):len(ids)] = torch.tensor(target)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    return pad


def train_loader(split: GenerationSplit, batch_size: int, pad_token_id: int, seed: int, grouped: bool = False,
                 rank: int = 0, world: int = 1) -> DataLoader:
    """`grouped`: batches of similar prompt + target lengths, this rank's share of each (trainers.batching)."""
    pairs = list(zip(split.prompt_ids, split.target_ids))
    if grouped:
        lengths = [len(p) + len(t) for p, t in pairs]
        return DataLoader(pairs, batch_sampler=LengthGroupedBatches(lengths, batch_size, seed, rank, world),
                          collate_fn=collate_train(pad_token_id))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(pairs, batch_size=batch_size, shuffle=True, generator=generator,
                      collate_fn=collate_train(pad_token_id))


def left_pad(prompts: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, longest - len(ids):] = torch.tensor(ids)
        attention_mask[row, longest - len(ids):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def cut_at_eos(ids: list[int], eos_token_id: int) -> list[int]:
    return ids[:ids.index(eos_token_id)] if eos_token_id in ids else ids


@torch.no_grad()
def generate(model: nn.Module, prompts: list[list[int]], *, pad_token_id: int, eos_token_id: int,
             max_new_tokens: int, batch_size: int, device: torch.device, autocast=None,
             synced: bool = False) -> list[list[int]]:
    """Greedy continuations (new tokens only, cut at the end-of-sequence token), batched with left padding.
    `synced` (FSDP): a rank whose answers are complete keeps stepping until every rank's are (transformers'
    synced_gpus), since each step gathers the sharded weights from all of them."""
    import contextlib

    model.eval()
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        batch = {k: v.to(device) for k, v in left_pad(prompts[start:start + batch_size], pad_token_id).items()}
        with (autocast or contextlib.nullcontext)():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                       pad_token_id=pad_token_id, eos_token_id=eos_token_id, synced_gpus=synced)
        new = generated[:, batch["input_ids"].shape[1]:].cpu().tolist()  # generate returns prompt + continuation
        out += [cut_at_eos(ids, eos_token_id) for ids in new]
    return out


@torch.no_grad()
def target_loss(model: nn.Module, split: GenerationSplit, pad_token_id: int, batch_size: int, device: torch.device,
                rows: list[int], autocast=None, own: int | None = None) -> tuple[float, int]:
    """Summed cross-entropy over the target tokens of these rows, and how many target tokens there were; rows past
    the first `own` (FSDP's padding, trainers.sharding.shard_rows) are run and not counted."""
    import contextlib

    model.eval()
    total, tokens = 0.0, 0
    own = len(rows) if own is None else own
    pairs = [(split.prompt_ids[i], split.target_ids[i]) for i in rows]
    for start, batch in zip(range(0, len(pairs), batch_size),
                            DataLoader(pairs, batch_size=batch_size, collate_fn=collate_train(pad_token_id))):
        batch = {k: v.to(device) for k, v in batch.items()}
        with (autocast or contextlib.nullcontext)():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, logits.shape[1] - batch["input_ids"].shape[1]:]  # soft prompts add positions in front
        # position t predicts token t+1
        shifted_logits, shifted_labels = logits[:, :-1].float(), batch["labels"][:, 1:].clone()
        shifted_labels[max(0, own - start):] = IGNORE_INDEX  # padding rows
        total += nn.functional.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]),
                                             shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                             reduction="sum").item()
        tokens += int((shifted_labels != IGNORE_INDEX).sum())
    return total, tokens


def evaluate(model: nn.Module, split: GenerationSplit, *, decode: Callable[[list[int]], str], pad_token_id: int,
             eos_token_id: int, max_new_tokens: int, batch_size: int, device: torch.device,
             match: MatchRule = "normalized", scoring: Scoring = "match", answer_pattern: str | None = None,
             length_normalized: bool = False, autocast=None, even: bool = False,
             in_length_order: bool = False) -> dict[str, float]:
    """Exact-match accuracy of the answers (by `scoring`: trainers.answer_scoring) and the target-only loss, over the
    whole split: each rank takes every world_size-th example and the sums are added across ranks. `even` (FSDP):
    every rank runs as many rows, generation steps and forward passes as the others, and drops its padding.
    `in_length_order`: longest prompts first."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    rows, own = shard_rows(len(split), rank, world, even and distributed)
    if in_length_order:
        rows = by_length(rows[:own], [len(p) for p in split.prompt_ids]) + rows[own:]
    start = time.perf_counter()
    if scoring == "choice":
        mine = rows[:own]
        prompts, options = [split.prompt_ids[i] for i in mine], [split.option_ids[i] for i in mine]
        if even and distributed:  # FSDP: rows with their prompts, as many forward passes on every rank
            least = _most_across_ranks(-(-sum(len(o) for o in options) // batch_size), device)
            scores = option_loglikelihoods(model, prompts, options, pad_token_id=pad_token_id, batch_size=batch_size,
                                           device=device, autocast=autocast, min_batches=least)
        else:
            score = cached_option_loglikelihoods if shares_prompt_cache(model) else option_loglikelihoods
            scores = score(model, prompts, options, pad_token_id=pad_token_id, batch_size=batch_size, device=device,
                           autocast=autocast)
        answers = [split.options[i][choose(s, split.options[i], length_normalized)] for s, i in zip(scores, mine)]
        targets = [split.targets[i] for i in mine]
    else:
        generated = generate(model, [split.prompt_ids[i] for i in rows], pad_token_id=pad_token_id,
                             eos_token_id=eos_token_id, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             device=device, autocast=autocast, synced=even and distributed)[:own]
        answers = [decode(ids) for ids in generated]
        targets = [split.targets[i] for i in rows[:own]]
        if scoring == "extract":
            answers = [extract_answer(a, answer_pattern) for a in answers]
            targets = [extracted_target(t, answer_pattern) for t in targets]
    answering = time.perf_counter() - start
    correct = sum(a is not None and exact_match(a, t, match) for a, t in zip(answers, targets))
    loss_sum, tokens = target_loss(model, split, pad_token_id, batch_size, device, rows, autocast, own)
    sums = torch.tensor([float(correct), float(own), loss_sum, float(tokens)], dtype=torch.float64)
    slowest = torch.tensor([answering], dtype=torch.float64)
    if distributed:
        sums, slowest = sums.to(device), slowest.to(device)
        dist.all_reduce(sums)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        sums, slowest = sums.cpu(), slowest.cpu()
    correct_all, seen, loss_all, tokens_all = sums.tolist()
    return {"accuracy": correct_all / seen if seen else 0.0, "loss": loss_all / tokens_all if tokens_all else 0.0,
            GENERATION_SAMPLES_PER_SECOND: seen / max(slowest.item(), 1e-9)}


def _most_across_ranks(value: int, device: torch.device) -> int:
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def model_problem(config: Any) -> str | None:
    """A generation model needs a causal-LM head: an encoder such as BERT has none worth the name."""
    architectures = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures):
        return None
    shown = ", ".join(architectures) or config.model_type
    return (f"model: a {config.model_type} model ({shown}) has no causal-LM head; task: generation needs a decoder "
            f"language model (a *ForCausalLM checkpoint, e.g. SmolLM2-135M-Instruct)")


def evaluate_split(model: nn.Module, split: GenerationSplit, data: TokenizedData,
                   context: EvalContext) -> dict[str, float]:
    from peftsweep.trainers.loop import autocast

    return evaluate(model, split, decode=context.decode, pad_token_id=data.pad_token_id,
                    eos_token_id=data.eos_token_id, max_new_tokens=context.max_new_tokens or data.max_new_tokens,
                    batch_size=context.batch_size, device=context.device, match=context.match,
                    scoring=context.scoring, answer_pattern=context.answer_pattern,
                    length_normalized=context.length_normalized,
                    autocast=lambda: autocast(context.device, context.precision), even=context.sharded,
                    in_length_order=context.in_length_order)


def zero_shot_floor(data: TokenizedData, template: Any, device: torch.device) -> dict[str, float]:
    """Exact-match accuracy of the pre-trained model itself, nothing trained (same prompts, same scoring)."""
    from peftsweep.trainers.loop import autocast, uses_bf16
    from peftsweep.trainers.model import load_base, load_tokenizer  # the model loads this module's kind: no cycle,
    # but the floor is the only part of a task kind that loads a model

    model = load_base(template.model, [], task=TASK, device=device, trust_remote_code=template.trust_remote_code)
    if uses_bf16(device, template.train.precision):  # nothing trains: every weight lean (an 8B model in 16 GB)
        model = model.to(torch.bfloat16)
    tokenizer = load_tokenizer(template.model, template.trust_remote_code)
    return {name: evaluate(model, data.splits[name], decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                           pad_token_id=data.pad_token_id, eos_token_id=data.eos_token_id,
                           max_new_tokens=template.generation.max_new_tokens or data.max_new_tokens,
                           batch_size=template.train.eval_batch_size, device=device,
                           match=template.generation.match, scoring=template.generation.scoring,
                           answer_pattern=template.generation.answer_pattern,
                           length_normalized=template.generation.length_normalized,
                           autocast=lambda: autocast(device, template.train.precision))["accuracy"]
            for name in ("validation", "test")}


def data_problems(spec: Any, settings: Any = None) -> list[str]:
    problems = []
    if spec.label_words is not None and spec.template is None:
        problems.append("data.label_words: only with data.template (the targets are otherwise a column)")
    if spec.choices_column is not None and spec.template is not None:
        problems.append("data.choices_column: not with data.template (its options are the label words)")
    scoring = getattr(settings, "scoring", "match")
    if scoring == "choice" and spec.template is None and spec.choices_column is None:
        problems.append("generation.scoring: choice needs options: data.template (its label words) or "
                        "data.choices_column")
    if spec.choices_column is not None and scoring != "choice":
        problems.append(f"data.choices_column: only read with generation.scoring: choice (it is {scoring})")
    return problems


TASK = TaskKind(
    name=TaskName.GENERATION,
    summary="a causal LM answers a prompt; exact-match accuracy of its greedy generation, of the answer extracted "
            "from it, or of the option it finds most likely",
    model_class="AutoModelForCausalLM",
    head_kwargs=lambda label_names: {},
    model_problem=model_problem,
    tokenize=tokenize_generation,
    train_loader=train_loader,
    evaluate=evaluate_split,
    extra_metrics=("loss",),
    qualities=("accuracy", "exact_match"),
    floor_name="zero-shot",
    data_keys=("template", "label_words", "chat_template", "prompt_column", "target_column", "choices_column"),
    has_settings=True,
    data_problems=data_problems,
    floor=zero_shot_floor,
    floor_runs_model=True,
    decodes=True,
    logits_over_vocab=True,
    has_lm_head=True,
)
