"""Data: load (preset, local files or a hub dataset), split, check labels, tokenize once for the whole sweep.

Tokenization happens once in the driver; the result (`TokenizedData`, unpadded token ids) is shared with every
trial through the Ray object store. Batches are padded per batch, not to max_length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, model_validator

from peftsweep.errors import UserError
from peftsweep.trainers.config import Strict
from peftsweep.trainers.presets import PRESETS

SPLITS = ("train", "validation", "test")


class DataSpec(Strict):
    task: Literal["trec6", "rotten_tomatoes"] | None = Field(
        None, description="a bundled task, offline: `trec6` or `rotten_tomatoes` (exactly one of `task`, `train_file`, "
                          "`hub_dataset`)")
    train_file: str | None = Field(None, description="CSV/TSV/JSON/JSONL/Parquet file with the training examples")
    validation_file: str | None = Field(None, description="optional; carved from the training data when absent")
    test_file: str | None = Field(None, description="optional; carved from the training data when absent")
    hub_dataset: str | None = Field(None, description="a Hugging Face hub dataset name (needs network)")
    hub_config: str | None = Field(None, description="the hub dataset's configuration name")
    text_column: str = Field("text", description="column holding the input text")
    label_column: str = Field("label", description="column holding the label (integers 0..K-1 or strings)")
    num_labels: int | None = Field(None, ge=2, description="expected number of classes; checked against the data")
    max_length: int | None = Field(None, ge=2, description="token limit per example (task default, else 128)")
    train_size: int | None = Field(None, ge=1, description="subsample the training split to this many examples")
    validation_size: int | None = Field(None, ge=1, description="subsample the validation split")
    test_size: int | None = Field(None, ge=1, description="subsample the test split")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="share of training data carved for validation")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="share of training data carved for test")
    seed: int = Field(0, description="seed for carving and subsampling")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        sources = [s for s in ("task", "train_file", "hub_dataset") if getattr(self, s)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one of task, train_file, hub_dataset (got {sources or 'none'})")
        return self


@dataclass
class Split:
    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TokenizedData:
    splits: dict[str, Split]
    label_names: list[str]
    pad_token_id: int
    max_length: int

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def read_file(path: str, spec: DataSpec) -> pd.DataFrame:
    import datasets

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"data: file not found: {path}")
    suffix = file.suffix.lower().lstrip(".")
    kind = {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}.get(suffix)
    if kind is None:
        raise UserError(f"data: {path}: unsupported file type .{suffix} (use csv, tsv, json, jsonl or parquet)")
    kwargs = {"delimiter": "\t"} if suffix == "tsv" else {}
    return datasets.load_dataset(kind, data_files=str(file), split="train", **kwargs).to_pandas()


def read_hub(spec: DataSpec) -> dict[str, pd.DataFrame]:
    import datasets

    try:
        loaded = datasets.load_dataset(spec.hub_dataset, spec.hub_config)
    except Exception as exc:  # network down, unknown name, ...
        raise UserError(f"data.hub_dataset: cannot load {spec.hub_dataset!r}: {exc}") from exc
    return {name: split.to_pandas() for name, split in loaded.items()}


def select_columns(frame: pd.DataFrame, spec: DataSpec, where: str) -> pd.DataFrame:
    missing = [c for c in (spec.text_column, spec.label_column) if c not in frame.columns]
    if missing:
        raise UserError(f"data: {where} has no column {', '.join(map(repr, missing))} "
                        f"(columns: {', '.join(map(str, frame.columns))}); set data.text_column / data.label_column")
    out = frame[[spec.text_column, spec.label_column]].rename(
        columns={spec.text_column: "text", spec.label_column: "label"})
    return out.dropna().reset_index(drop=True)


def carve(pool: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `fraction` of the pool at random: (rest, carved)."""
    carved = pool.sample(frac=fraction, random_state=seed)
    return pool.drop(carved.index).reset_index(drop=True), carved.reset_index(drop=True)


def raw_splits(spec: DataSpec) -> tuple[dict[str, pd.DataFrame], list[str] | None, int]:
    """The three splits as (text, label) frames, preset label names if any, and the default max_length."""
    names, max_length, given = None, 128, {}
    if spec.task:
        preset = PRESETS[spec.task]()
        names, max_length = preset.label_names, preset.max_length
        given = {"train": preset.pool} | ({"test": preset.test} if preset.test is not None else {})
    elif spec.train_file:
        files = {"train": spec.train_file, "validation": spec.validation_file, "test": spec.test_file}
        given = {k: select_columns(read_file(v, spec), spec, f"data.{k}_file {v}") for k, v in files.items() if v}
    else:
        given = {k: select_columns(v, spec, f"hub split {k!r}") for k, v in read_hub(spec).items() if k in SPLITS}
        if "train" not in given:
            raise UserError(f"data.hub_dataset: {spec.hub_dataset!r} has no 'train' split")
    if "test" not in given:
        given["train"], given["test"] = carve(given["train"], spec.test_fraction, spec.seed)
    if "validation" not in given:
        given["train"], given["validation"] = carve(given["train"], spec.validation_fraction, spec.seed + 1)
    return given, names, max_length


def subsample(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    if size is None or size >= len(frame):
        return frame
    return frame.sample(n=size, random_state=seed).reset_index(drop=True)


def encode_labels(splits: dict[str, pd.DataFrame], names: list[str] | None,
                  num_labels: int | None) -> tuple[dict[str, list[int]], list[str]]:
    """Map labels to 0..K-1 and check them: integers must lie in range, every split's labels must be known."""
    values = pd.concat([s["label"] for s in splits.values()])
    problems: list[str] = []
    if pd.api.types.is_integer_dtype(values):
        k = num_labels or (len(names) if names else int(values.max()) + 1)
        bad = sorted(set(values[(values < 0) | (values >= k)].tolist()))
        if bad:
            problems.append(f"data.label_column: integer labels must lie in 0..{k - 1}, found {bad[:10]}")
        names = names or [str(i) for i in range(k)]
        encoded = {name: frame["label"].astype(int).tolist() for name, frame in splits.items()}
    else:
        names = sorted(set(splits["train"]["label"].astype(str)))
        unseen = sorted(set(values.astype(str)) - set(names))
        if unseen:
            problems.append(f"data.label_column: labels {unseen[:10]} appear outside the training split")
        index = {n: i for i, n in enumerate(names)}
        encoded = {name: [index.get(str(v), -1) for v in frame["label"]] for name, frame in splits.items()}
    if num_labels is not None and len(names) != num_labels:
        problems.append(f"data.num_labels is {num_labels} but the data has {len(names)} classes: {names[:20]}")
    if len(names) < 2:
        problems.append(f"data.label_column: need at least 2 classes, found {names}")
    if problems:
        raise UserError(problems, "the data does not match the config")
    return encoded, names


def load_splits(spec: DataSpec) -> tuple[dict[str, pd.DataFrame], list[str], int]:
    given, names, default_length = raw_splits(spec)
    sizes = {"train": spec.train_size, "validation": spec.validation_size, "test": spec.test_size}
    splits = {name: subsample(given[name], sizes[name], spec.seed) for name in SPLITS}
    for name, frame in splits.items():
        if frame.empty:
            raise UserError(f"data: the {name} split is empty")
    encoded, names = encode_labels(splits, names, spec.num_labels)
    for name in SPLITS:
        splits[name] = splits[name].assign(label=encoded[name])
    return splits, names, spec.max_length or default_length


def tokenize(spec: DataSpec, tokenizer) -> TokenizedData:
    """Load, split, check and tokenize (truncate, no padding). Done once per sweep."""
    splits, names, max_length = load_splits(spec)
    tokenized = {}
    for name, frame in splits.items():
        ids = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=max_length)["input_ids"]
        tokenized[name] = Split(input_ids=ids, labels=frame["label"].tolist())
    return TokenizedData(splits=tokenized, label_names=names, pad_token_id=pad_id(tokenizer), max_length=max_length)


def pad_id(tokenizer) -> int:
    # Decoder tokenizers often have no pad token: any id works since padded positions are masked out.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
