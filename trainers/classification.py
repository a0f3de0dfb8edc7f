"""The classification task kind: a new head on the pre-trained body predicts one of K labels; scored by accuracy,
macro-F1 and the Matthews correlation coefficient over the whole split (each rank evaluates a shard, confusion matrices are summed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from peftsweep.spaces import TaskName
from peftsweep.trainers.batching import LengthGroupedBatches, by_length
from peftsweep.trainers.data import DataSpec, TokenizedData, load_splits, pad_id
from peftsweep.trainers.loop import autocast, to_device
from peftsweep.trainers.metrics import accuracy, confusion, macro_f1, mcc
from peftsweep.trainers.sharding import shard_rows
from peftsweep.trainers.task_kind import EvalContext, TaskKind


@dataclass
class Split:
    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def tokenize(spec: DataSpec, tokenizer: Any, max_positions: int = 0) -> TokenizedData:
    """Load, split, check and tokenize (truncate, no padding). Done once per sweep."""
    splits, names, max_length = load_splits(spec)
    tokenized = {}
    for name, frame in splits.items():
        ids = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=max_length)["input_ids"]
        tokenized[name] = Split(input_ids=ids, labels=frame["label"].tolist())
    return TokenizedData(splits=tokenized, label_names=names, pad_token_id=pad_id(tokenizer), max_length=max_length,
                         task=TaskName.CLASSIFICATION)


def collate(pad_token_id: int):
    """Pad each batch to its own longest example (dynamic padding), not to max_length."""

    def pad(batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        longest = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention_mask[row, :len(ids)] = 1
        labels = torch.tensor([label for _, label in batch])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    return pad


def train_loader(split: Split, batch_size: int, pad_token_id: int, seed: int, grouped: bool = False, rank: int = 0,
                 world: int = 1) -> DataLoader:
    """`grouped`: batches of similar lengths, this rank's share of each (trainers.batching); else shuffled batches
    (sharded across workers by Ray Train's DistributedSampler)."""
    pairs = list(zip(split.input_ids, split.labels))
    if grouped:
        batches = LengthGroupedBatches([len(ids) for ids in split.input_ids], batch_size, seed, rank, world)
        return DataLoader(pairs, batch_sampler=batches, collate_fn=collate(pad_token_id))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(pairs, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collate(pad_token_id))


@torch.no_grad()
def predict(model: nn.Module, split: Split, pad_token_id: int, batch_size: int, device: torch.device,
            precision: str = "fp32", rank: int = 0, world_size: int = 1,
            even: bool = False, in_length_order: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels for this rank's shard (every world_size-th example: no duplicates). `even` (FSDP):
    every rank runs as many rows as the rank with the most (trainers.sharding.shard_rows); the padding is dropped.
    `in_length_order`: the rows longest first (less padding; the labels come back in the same order)."""
    model.eval()
    rows, own = shard_rows(len(split.labels), rank, world_size, even)
    if in_length_order:
        rows = by_length(rows[:own], [len(ids) for ids in split.input_ids]) + rows[own:]
    pairs = [(split.input_ids[i], split.labels[i]) for i in rows]
    preds, labels = [], []
    for batch in DataLoader(pairs, batch_size=batch_size, collate_fn=collate(pad_token_id)):
        batch = to_device(batch, device)
        with autocast(device, precision):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        preds.append(logits.argmax(-1).cpu())
        labels.append(batch["labels"].cpu())
    empty = torch.empty(0, dtype=torch.long)
    return (torch.cat(preds)[:own] if preds else empty), (torch.cat(labels)[:own] if labels else empty)


def evaluate(model: nn.Module, split: Split, num_labels: int, pad_token_id: int, batch_size: int,
             device: torch.device, precision: str = "fp32", even: bool = False,
             in_length_order: bool = False) -> dict[str, float]:
    """Accuracy, macro-F1 and MCC over the whole split, each rank evaluating a shard; confusion matrices are summed."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    preds, labels = predict(model, split, pad_token_id, batch_size, device, precision, rank, world, even,
                            in_length_order)
    matrix = confusion(preds, labels, num_labels)
    if distributed:
        matrix = matrix.to(device)
        dist.all_reduce(matrix)
        matrix = matrix.cpu()
    return {"accuracy": accuracy(matrix), "macro_f1": macro_f1(matrix), "mcc": mcc(matrix)}


def head_kwargs(label_names: list[str]) -> dict[str, Any]:
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)}}


def model_problem(config: Any) -> str | None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return f"model: transformers has no sequence-classification head for model type {config.model_type!r}"
    return None


def evaluate_split(model: nn.Module, split: Split, data: TokenizedData, context: EvalContext) -> dict[str, float]:
    return evaluate(model, split, data.num_labels, data.pad_token_id, context.batch_size, context.device,
                    context.precision, context.sharded, context.in_length_order)


def majority_floor(data: TokenizedData, template: Any = None, device: Any = None) -> dict[str, dict[str, float]]:
    """The scores of always answering the training split's most frequent label: its accuracy (the label's share),
    macro-F1 and MCC (0: a constant answer carries no information)."""
    counts = torch.bincount(torch.tensor(data.splits["train"].labels), minlength=data.num_labels)
    majority = int(counts.argmax())
    out = {}
    for name in ("validation", "test"):
        labels = torch.tensor(data.splits[name].labels, dtype=torch.long)
        matrix = confusion(torch.full_like(labels, majority), labels, data.num_labels)
        out[name] = {"accuracy": accuracy(matrix), "macro_f1": macro_f1(matrix), "mcc": mcc(matrix)}
    return out


TASK = TaskKind(
    name=TaskName.CLASSIFICATION,
    summary="a new head predicts one of the labels; accuracy, macro-F1 and MCC",
    model_class="AutoModelForSequenceClassification",
    head_kwargs=head_kwargs,
    model_problem=model_problem,
    tokenize=tokenize,
    train_loader=train_loader,
    evaluate=evaluate_split,
    extra_metrics=("macro_f1", "mcc"),
    qualities=("accuracy", "macro_f1", "mcc"),
    floor_name="majority class",
    floor=majority_floor,
)
