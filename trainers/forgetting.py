"""Forgetting: how much worse a fine-tuned causal LM predicts general text than its base model did.

The measure of Hugging Face PEFT's method comparison (and the "learns less, forgets less" finding of Biderman et al.,
2024): the mean per-token cross-entropy of the trained model on a general-text sample, minus the base model's on the
same tokens. Positive: the model got worse at text it was not trained on. A PEFT model's base is the same model with
its adapter disabled (PEFT's `disable_adapter`), measured in the same process; full fine-tuning has no adapter to
disable: its base is measured in the trial before its first step (nothing trained yet: the base itself, in the
same precision and sharding as the trained model will be measured) and kept across restarts. Every rank measures
every chunk (a few thousand tokens: one forward pass each), so FSDP's ranks run as many forward passes.

The text is cut into chunks of `max_length` tokens (no special tokens, no padding inside a chunk, the last chunk
shorter and padded), at most `max_tokens` tokens in all, so the cost is bounded whatever the file's size.

It applies to the generation task kind only: a classification model has a new head and no language-model head left,
so it has no loss on text to compare (its encoder's masked-LM loss would need the pre-trained MLM head, which the
classification model does not load).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from peftsweep.metric_names import BASE_GENERAL_LOSS, FORGETTING, GENERAL_LOSS

IGNORE_INDEX = -100
# Tokens per forward pass: the logits over the vocabulary of this many positions are held at once (an 8B model's
# 128k vocabulary: about 0.5 GB in bf16), whatever the evaluation batch size
TOKENS_PER_PASS = 2048


def batch_size_for(chunks: list[list[int]], most: int) -> int:
    """Chunks per forward pass: at most `most` (the evaluation batch size), about TOKENS_PER_PASS tokens."""
    longest = max((len(c) for c in chunks), default=1)
    return max(1, min(most, TOKENS_PER_PASS // longest))


def text_chunks(tokenizer, text: str, max_length: int, max_tokens: int) -> list[list[int]]:
    """The text's tokens (no special tokens), at most `max_tokens`, in chunks of `max_length` (the last shorter)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return [ids[start:start + max_length] for start in range(0, len(ids), max_length)
            if len(ids[start:start + max_length]) >= 2]  # a chunk of one token predicts nothing


def general_text_chunks(settings, tokenizer, positions: int = 0) -> list[list[int]]:
    """The chunks of `forgetting:`'s text (trainers.config.ForgettingSettings), each at most the model's `positions`;
    raises UserError naming the key when the text cannot be read or holds too little."""
    from peftsweep.errors import UserError
    from peftsweep.trainers.presets import GENERAL_TEXTS

    if settings.preset is not None:
        text, key = GENERAL_TEXTS[settings.preset](), "forgetting.preset"
    else:
        path, key = Path(settings.text_file).expanduser(), "forgetting.text_file"
        if not path.is_file():
            raise UserError(f"{key}: file not found: {settings.text_file}")
        text = path.read_text(encoding="utf-8", errors="replace")
    length = min(settings.chunk_tokens, positions) if positions > 0 else settings.chunk_tokens
    chunks = text_chunks(tokenizer, text, length, settings.max_tokens)
    if not chunks:
        raise UserError(f"{key}: the text holds fewer than 2 tokens: nothing to measure forgetting on")
    return chunks


@torch.no_grad()
def mean_token_loss(model: nn.Module, chunks: list[list[int]], *, pad_token_id: int, batch_size: int,
                    device: torch.device, autocast=None) -> float:
    """Mean cross-entropy per predicted token over the chunks (each token from the ones before it in its chunk)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size]
        longest = max(len(c) for c in batch)
        input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, chunk in enumerate(batch):
            input_ids[row, :len(chunk)] = torch.tensor(chunk)
            labels[row, :len(chunk)] = torch.tensor(chunk)
            attention_mask[row, :len(chunk)] = 1
        with (autocast or contextlib.nullcontext)():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        logits = logits[:, logits.shape[1] - longest:]  # soft prompts add positions in front
        shifted_logits, shifted_labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
        total += nn.functional.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]),
                                             shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                             reduction="sum").item()
        count += int((shifted_labels != IGNORE_INDEX).sum())
    return total / count if count else float("nan")


def without_adapter(model: nn.Module):
    """A context in which a PEFT model is its base (adapter disabled); None for a model without an adapter."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) and hasattr(model, "peft_config") else None


def base_general_loss(model: nn.Module, chunks: list[list[int]], *, pad_token_id: int, batch_size: int,
                      device: torch.device, autocast=None) -> float:
    """The base model's loss: a PEFT model's with its adapter disabled, any other model's as it is (so measure it
    before the first step: then nothing is trained yet)."""
    with without_adapter(model) or contextlib.nullcontext():
        return mean_token_loss(model, chunks, pad_token_id=pad_token_id, batch_size=batch_size, device=device,
                               autocast=autocast)


def forgetting(model: nn.Module, chunks: list[list[int]], *, pad_token_id: int, batch_size: int,
               device: torch.device, autocast=None, base_loss: float | None = None) -> dict[str, float]:
    """{general_loss: the model's, base_general_loss: its base's, forgetting: the first minus the second} (the
    names logged: peftsweep.metric_names). `base_loss`: the base's, measured before (base_general_loss before the
    first step); else the adapter is disabled to measure it (a model without one then raises)."""
    kwargs = dict(pad_token_id=pad_token_id, batch_size=batch_size, device=device, autocast=autocast)
    now = mean_token_loss(model, chunks, **kwargs)
    if base_loss is None:
        if without_adapter(model) is None:
            raise ValueError("a model without an adapter needs its base's loss measured before (base_loss)")
        base_loss = base_general_loss(model, chunks, **kwargs)
    return {GENERAL_LOSS: now, BASE_GENERAL_LOSS: base_loss, FORGETTING: now - base_loss}
