"""How a generation task's answer is obtained before it is compared with the target (`generation.scoring`).

- `match`: the greedy generation itself (trainers.generation).
- `extract`: the first group of a regex (`generation.answer_pattern`) found in the generation; a generation where it
  finds nothing is wrong. A target the pattern matches is reduced the same way (a worked solution ending in
  `#### 42` is compared by its 42); a target it does not match is compared as it is.
- `choice`: no generation. Each option (the label words of a template, or the example's own options from
  `data.choices_column`) is scored by its log-likelihood after the prompt, the sum of its tokens' log-probabilities
  (lm-evaluation-harness's `acc`); with `generation.length_normalized` divided by the option's length in UTF-8 bytes
  (its `acc_norm`). The highest is the answer. The prompt goes through the model once per example and its KV cache
  is shared by the example's options (a model whose PEFT method manages its own cache, prefix and prompt tuning,
  and an FSDP evaluation run each option as a row with its prompt instead).
"""

from __future__ import annotations

import contextlib
import re
from typing import Literal

import torch
from torch import nn

Scoring = Literal["match", "choice", "extract"]


def extract_answer(text: str, pattern: str | re.Pattern) -> str | None:
    """The pattern's first group (or its whole match when it has no group) at its first match; None without one."""
    found = re.search(pattern, text)
    if found is None:
        return None
    return found.group(1) if found.re.groups else found.group(0)


def extracted_target(target: str, pattern: str | re.Pattern) -> str:
    """A target reduced by the same pattern when it matches (a worked solution to its final answer), else as it is."""
    answer = extract_answer(target, pattern)
    return target if answer is None else answer


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot extract an answer, or None."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression ({exc})"
    return None


def pair_rows(prompts: list[list[int]], options: list[list[list[int]]]) -> list[tuple[int, int, list[int], list[int]]]:
    """(example, option, prompt ids, option ids) for every option of every example, in order."""
    return [(i, j, prompt, option) for i, (prompt, opts) in enumerate(zip(prompts, options))
            for j, option in enumerate(opts)]


def shares_prompt_cache(model: nn.Module) -> bool:
    """The prompt's KV cache can be computed once and reused for each option: not for PEFT's prompt learning methods,
    whose virtual tokens or prefixes the PEFT model puts in front of the input (or in the cache) itself."""
    config = getattr(model, "active_peft_config", None)
    return not getattr(config, "is_prompt_learning", False)


def example_batches(options: list[list[list[int]]], batch_size: int) -> list[list[int]]:
    """Consecutive examples whose options make at most `batch_size` rows (an example with more is a batch alone)."""
    batches, current, rows = [], [], 0
    for i, opts in enumerate(options):
        if current and rows + len(opts) > batch_size:
            batches.append(current)
            current, rows = [], 0
        current.append(i)
        rows += len(opts)
    return batches + ([current] if current else [])


@torch.no_grad()
def cached_option_loglikelihoods(model: nn.Module, prompts: list[list[int]], options: list[list[list[int]]], *,
                                 pad_token_id: int, batch_size: int, device: torch.device,
                                 autocast=None) -> list[list[float]]:
    """As option_loglikelihoods, the prompt run once per example: prompts left-padded (positions counted from each
    prompt's first token), their last position's log-probabilities give each option's first token, and the cache,
    repeated once per option, is continued by the options' tokens (right-padded) for the rest."""
    model.eval()
    scores: list[list[float]] = [[0.0] * len(opts) for opts in options]
    for batch in example_batches(options, batch_size):
        longest = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, longest - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, longest - len(prompts[i]):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with (autocast or contextlib.nullcontext)():
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                        position_ids=positions.to(device), use_cache=True)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        pairs = [(row, i, j) for row, i in enumerate(batch) for j in range(len(options[i]))]
        cache = out.past_key_values
        cache.reorder_cache(torch.tensor([row for row, _, _ in pairs], device=device))
        width = max(len(options[i][j]) for _, i, j in pairs)
        option_ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
        option_mask = torch.zeros((len(pairs), width), dtype=torch.long)
        for k, (_, i, j) in enumerate(pairs):
            option_ids[k, :len(options[i][j])] = torch.tensor(options[i][j])
            option_mask[k, :len(options[i][j])] = 1
        if width > 1:  # the tokens after the first are predicted from the option's own earlier tokens
            rows = torch.tensor([row for row, _, _ in pairs])
            lengths = torch.tensor([len(prompts[i]) for _, i, _ in pairs])
            with (autocast or contextlib.nullcontext)():
                rest = model(input_ids=option_ids[:, :-1].to(device),
                             attention_mask=torch.cat([mask[rows], option_mask[:, :-1]], dim=1).to(device),
                             position_ids=(lengths[:, None] + torch.arange(width - 1)[None]).to(device),
                             past_key_values=cache, use_cache=True).logits.float()
            rest = torch.log_softmax(rest, dim=-1)
        for k, (row, i, j) in enumerate(pairs):
            option = options[i][j]
            total = float(first[row, option[0]])
            for t in range(1, len(option)):
                total += float(rest[k, t - 1, option[t]])
            scores[i][j] = total
    return scores


@torch.no_grad()
def option_loglikelihoods(model: nn.Module, prompts: list[list[int]], options: list[list[list[int]]], *,
                          pad_token_id: int, batch_size: int, device: torch.device, autocast=None,
                          min_batches: int = 0) -> list[list[float]]:
    """log P(option | prompt) for each option of each example: the sum over the option's tokens of the log-softmax
    at the position before each. Rows (prompt + option, right-padded) are batched across examples. `min_batches`
    (FSDP): forward passes to run at least, repeating the last batch, so every rank runs as many as the others."""
    model.eval()
    rows = pair_rows(prompts, options)
    scores: list[list[float]] = [[0.0] * len(opts) for opts in options]
    batches = [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]
    counted = len(batches)  # the passes past these only keep step with the other ranks (FSDP)
    filler = batches[-1] if batches else [(0, 0, [pad_token_id], [pad_token_id])]
    batches += [filler] * max(0, min_batches - counted)
    for number, batch in enumerate(batches):
        longest = max(len(p) + len(o) for _, _, p, o in batch)
        input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, (_, _, prompt, option) in enumerate(batch):
            input_ids[row, :len(prompt) + len(option)] = torch.tensor(prompt + option)
            attention_mask[row, :len(prompt) + len(option)] = 1
        with (autocast or contextlib.nullcontext)():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        logits = logits[:, logits.shape[1] - longest:]  # soft prompts add positions in front
        if number >= counted:
            continue
        for row, (i, j, prompt, option) in enumerate(batch):
            # position t predicts token t + 1: the option's tokens are predicted from len(prompt) - 1 on
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(option) - 1, device=logits.device)
            picked = torch.log_softmax(logits[row, positions].float(), dim=-1)
            scores[i][j] = float(picked.gather(1, torch.tensor(option, device=logits.device)[:, None]).sum())
    return scores


def choose(scores: list[float], option_texts: list[str], length_normalized: bool = False) -> int:
    """The index of the best option (the first of equals); normalised: per UTF-8 byte of the option's text."""
    if length_normalized:
        scores = [s / max(1, len(text.encode())) for s, text in zip(scores, option_texts)]
    return max(range(len(scores)), key=lambda j: (scores[j], -j))
