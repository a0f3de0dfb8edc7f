"""What a task kind is: what a trial trains the model to do, and how it is scored.

A `TaskKind` says which model head is loaded, how the data is tokenized and batched, how accuracy is measured, and
which model can do it at all. The recipe asks the task kind; it never tests a task's name. One module per task kind
(trainers/classification.py, trainers/generation.py), collected in trainers/tasks.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from peftsweep.trainers.data import DataSpec, TokenizedData

MatchRule = Literal["normalized", "exact"]


@dataclass(frozen=True)
class EvalContext:
    """How one worker evaluates: shared by every task kind (generation reads the decoding and scoring fields)."""

    batch_size: int
    device: torch.device
    precision: str
    decode: Callable[[list[int]], str] | None = None  # token ids -> text
    max_new_tokens: int = 0
    match: MatchRule = "normalized"
    scoring: str = "match"  # generation.scoring (trainers.answer_scoring)
    answer_pattern: str | None = None
    length_normalized: bool = False
    sharded: bool = False  # FSDP: every rank runs as many batches (and generation steps) as the others
    in_length_order: bool = False  # each rank's examples longest first (train.group_by_length)


def no_problems(spec: DataSpec, settings: Any = None) -> list[str]:
    return []


@dataclass(frozen=True)
class TaskKind:
    """name: what users write (`task:`). model_class: the transformers auto class loaded for it.
    head_kwargs: from_pretrained arguments given the label names (a classifier's size and label maps).
    model_problem: why a model (its transformers config) cannot do this task, or None.
    tokenize: (data spec, tokenizer, the model's positions) -> the tokenized splits, once per sweep.
    train_loader: (split, per-worker batch size, pad id, seed, grouped, rank, world) -> shuffled, dynamically padded
        batches with labels; `grouped`: of similar lengths, this rank's share (trainers.batching).
    evaluate: (model, split, data, context) -> {"accuracy": ..., <extra_metrics>: ...} over the whole split, each
        rank taking a shard.
    extra_metrics: the other scores evaluate reports (logged as val_<name> / test_<name>).
    decodes: its evaluation turns token ids back into text (the worker loads the tokenizer).
    floor_name / floor: the accuracy a model reaches with nothing trained, which a trial must beat ({"validation":
        ..., "test": ...}): given the data and the sweep's trial template (model, evaluation settings) and a device.
    floor_runs_model: the floor needs the model (run where trials run); else it is computed from the data alone.
    logits_over_vocab: its loss is over the vocabulary's logits at every position (a causal LM): the memory plan
        counts them.
    has_lm_head: its model keeps a language-model head: its loss on general text before and after training can
        be compared (`forgetting:`, trainers.forgetting), and language-model benchmarks run on it
        (`evaluate.lm_eval`, trainers.benchmarks).
    data_keys: the `data:` keys only this task kind reads; has_settings: it reads a top-level config section of its
        own name (`generation:`). Set under another task kind, they are refused by name.
    qualities: the qualities a sweep of this kind may search (`metric:`), each a score its evaluate reports.
    data_problems: what is wrong with a `data:` section for this task kind (keys that need one another), given its
        own settings section too (None for a task kind without one)."""

    name: str
    summary: str
    model_class: str
    head_kwargs: Callable[[list[str]], dict[str, Any]]
    model_problem: Callable[[Any], str | None]
    tokenize: Callable[[DataSpec, Any, int], TokenizedData]
    train_loader: Callable[..., DataLoader]
    evaluate: Callable[[nn.Module, Any, TokenizedData, EvalContext], dict[str, float]]
    extra_metrics: tuple[str, ...]
    floor_name: str
    floor: Callable[[TokenizedData, Any, torch.device], dict[str, float]]
    floor_runs_model: bool = False
    decodes: bool = False
    logits_over_vocab: bool = False
    has_lm_head: bool = False
    data_keys: tuple[str, ...] = ()
    has_settings: bool = False
    data_problems: Callable[[DataSpec, Any], list[str]] = no_problems
    qualities: tuple[str, ...] = ("accuracy",)  # what `metric:` may name for this task kind
