"""Data: load (preset, local files or a hub dataset), split, check labels, tokenize once for the whole sweep.

This module reads and splits the data for every task kind and tokenizes it for classification; generation's prompts
and targets are built and tokenized in `trainers.generation_data`.

Tokenization happens once in the driver; the result (`TokenizedData`, unpadded token ids) is shared with every
trial through the Ray object store. Batches are padded per batch, not to max_length.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from peftsweep.errors import UserError
from peftsweep.spaces import TaskName
from peftsweep.trainers.config import Strict
from peftsweep.trainers.presets import PRESETS

SPLITS = ("train", "validation", "test")


class DataSpec(Strict):
    preset: Literal["trec6", "rotten_tomatoes"] | None = Field(
        None, description="a bundled data set, offline: `trec6` or `rotten_tomatoes` (exactly one of `preset`, "
                          "`train_file`, `hub_dataset`)")
    train_file: str | None = Field(None, description="CSV/TSV/JSON/JSONL/Parquet file with the training examples")
    validation_file: str | None = Field(None, description="optional; carved from the training data when absent")
    test_file: str | None = Field(None, description="optional; carved from the training data when absent")
    hub_dataset: str | None = Field(None, description="a Hugging Face hub dataset name (needs network)")
    hub_config: str | None = Field(None, description="the hub dataset's configuration name")
    text_column: str = Field("text", description="column holding the input text")
    label_column: str = Field("label", description="column holding the label (integers 0..K-1 or strings)")
    prompt_column: str = Field("prompt", description="generation: column holding the prompt")
    target_column: str = Field("target", description="generation: column holding the answer to generate")
    template: str | None = Field(
        None, description="generation from a classification data set: the prompt, with `{column}` placeholders "
                          "(e.g. `\"Question: {text}\\nType:\"`); the target is the label's word")
    label_words: list[str] | None = Field(
        None, description="generation with a template: each class's answer, in label order (default: the label "
                          "names)")
    choices_column: str | None = Field(
        None, description="generation with generation.scoring: choice: column holding each example's options (a list, "
                          "or its JSON text in CSV); the target is one of them")
    chat_template: bool = Field(
        False, description="generation: put each prompt in the model's chat template (as the user's turn, followed "
                           "by the assistant's answer)")
    num_labels: int | None = Field(None, ge=2, description="expected number of classes; checked against the data")
    max_length: int | None = Field(
        None, ge=2, description="token limit per example (task default, else 128; at most what the model takes)")
    train_size: int | None = Field(None, ge=1, description="subsample the training split to this many examples")
    validation_size: int | None = Field(None, ge=1, description="subsample the validation split")
    test_size: int | None = Field(None, ge=1, description="subsample the test split")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="share of training data carved for validation")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="share of training data carved for test")
    seed: int = Field(0, description="seed for carving and subsampling")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        sources = [s for s in ("preset", "train_file", "hub_dataset") if getattr(self, s)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one of preset, train_file, hub_dataset (got {sources or 'none'})")
        return self


@dataclass
class TokenizedData:
    splits: dict[str, Any]  # Split for classification, trainers.generation.GenerationSplit for generation
    label_names: list[str]  # classes (classification), or the answer words of a template (generation)
    pad_token_id: int
    max_length: int
    task: TaskName  # the task kind it was tokenized for
    eos_token_id: int | None = None  # generation: ends every target, stops generation
    max_new_tokens: int = 0  # generation: the longest target with its end-of-sequence token
    general_text: list[list[int]] | None = None  # `forgetting:`: the general text's token chunks (trainers.forgetting)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def read_file(path: str, spec: DataSpec, key: str = "data.train_file") -> pd.DataFrame:
    import datasets

    file = Path(path).expanduser()
    if file.is_dir():
        raise UserError(f"{key}: {path} is a folder, not a data file")
    if not file.is_file():
        raise UserError(f"{key}: file not found: {path}")
    suffix = file.suffix.lower().lstrip(".")
    kind = {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}.get(suffix)
    if kind is None:
        raise UserError(f"{key}: {path}: unsupported file type .{suffix} (use csv, tsv, json, jsonl or parquet)")
    if file.stat().st_size == 0:
        raise UserError(f"{key}: {path}: no rows (the file is empty)")
    kwargs = {"delimiter": "\t"} if suffix == "tsv" else {}
    try:
        with quiet_library_errors():
            frame = datasets.load_dataset(kind, data_files=str(file), split="train", **kwargs).to_pandas()
    except ValueError as exc:
        if "corresponds to no data" in str(exc):  # datasets' words for a file with no rows
            raise UserError(f"{key}: {path}: no rows (a header at most)") from None
        raise UserError(f"{key}: {path}: cannot be read as {suffix.upper()}: {reason(exc)}") from None
    except Exception as exc:  # datasets wraps the parser's error (random bytes, a binary file, broken quoting)
        raise UserError(f"{key}: {path}: cannot be read as {suffix.upper()}: {reason(exc)}") from None
    if frame.empty:
        raise UserError(f"{key}: {path}: no rows (a header at most)")
    return frame


@contextlib.contextmanager
def quiet_library_errors():
    """`datasets` logs its own "Failed to read file ..." line (with the parser's traceback class) before it raises;
    the raised error becomes peftsweep's message, which names the key, so the console says it once."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def reason(exc: BaseException) -> str:
    """The innermost cause's message, on one line (datasets wraps the parser's error in its own)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_hub(spec: DataSpec) -> dict[str, pd.DataFrame]:
    import datasets

    try:
        loaded = datasets.load_dataset(spec.hub_dataset, spec.hub_config)
    except Exception as exc:  # network down, unknown name, ...
        raise UserError(f"data.hub_dataset: cannot load {spec.hub_dataset!r}: {exc}") from exc
    return {name: split.to_pandas() for name, split in loaded.items()}


def classification_columns(spec: DataSpec) -> dict[str, str]:
    return {"text": spec.text_column, "label": spec.label_column}


def column_hint(spec: DataSpec, columns: dict[str, str]) -> str:
    if spec.template is not None:
        return "data.template names the columns it reads (data.label_column the label)"
    if "prompt_text" in columns:
        return "set data.prompt_column / data.target_column, or data.template for a classification data set"
    return "set data.text_column / data.label_column"


def select_columns(frame: pd.DataFrame, spec: DataSpec, where: str, columns: dict[str, str]) -> pd.DataFrame:
    """The columns a task reads, renamed {name used here: column in the data}. Rows with a missing value are dropped,
    except from prompt/target data, where an empty target is reported."""
    missing = sorted({source for source in columns.values() if source not in frame.columns})
    if missing:
        raise UserError(f"data: {where} has no column {', '.join(map(repr, missing))} "
                        f"(columns: {', '.join(map(str, frame.columns))}); {column_hint(spec, columns)}")
    out = pd.DataFrame({name: frame[source] for name, source in columns.items()})
    return (out if "target_text" in columns else out.dropna()).reset_index(drop=True)


def carve(pool: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `fraction` of the pool at random: (rest, carved)."""
    carved = pool.sample(frac=fraction, random_state=seed)
    return pool.drop(carved.index).reset_index(drop=True), carved.reset_index(drop=True)


def raw_splits(spec: DataSpec, columns: dict[str, str]) -> tuple[dict[str, pd.DataFrame], list[str] | None, int]:
    """The three splits as frames of the given columns, preset label names if any, and the default max_length."""
    names, max_length, given = None, 128, {}
    if spec.preset:
        preset = PRESETS[spec.preset]()
        names, max_length = preset.label_names, preset.max_length
        frames = {"train": preset.pool} | ({"test": preset.test} if preset.test is not None else {})
        # a preset's columns are text and label, whatever data.text_column / data.label_column say
        renamed = {name: {spec.label_column: "label", spec.text_column: "text"}.get(source, source)
                   for name, source in columns.items()}
        given = {k: select_columns(v, spec, f"data.preset {spec.preset}", renamed) for k, v in frames.items()}
    elif spec.train_file:
        files = {"train": spec.train_file, "validation": spec.validation_file, "test": spec.test_file}
        given = {k: select_columns(read_file(v, spec, f"data.{k}_file"), spec, f"data.{k}_file {v}", columns)
                 for k, v in files.items() if v}
    else:
        given = {k: select_columns(v, spec, f"hub split {k!r}", columns) for k, v in read_hub(spec).items()
                 if k in SPLITS}
        if "train" not in given:
            raise UserError(f"data.hub_dataset: {spec.hub_dataset!r} has no 'train' split")
    if "test" not in given:
        given["train"], given["test"] = carve(given["train"], spec.test_fraction, spec.seed)
    if "validation" not in given:
        given["train"], given["validation"] = carve(given["train"], spec.validation_fraction, spec.seed + 1)
    return given, names, max_length


def content_problems(frames: dict[str, pd.DataFrame], columns: dict[str, str]) -> list[str]:
    """Cells that are neither text nor a number (lists, mappings: a JSON file's nested values), and numeric labels
    that are not whole numbers; each column named once, with the first row that shows it."""
    problems = []
    for name, source in columns.items():
        for split, frame in frames.items():
            if name not in frame:
                continue
            odd = frame[name].map(lambda v: not isinstance(v, (str, int, float, bool, np.integer, np.floating)))
            if odd.any():
                row = int(odd.idxmax())
                problems.append(f"data: column {source!r} ({split} split): row {row + 1} holds a "
                                f"{type(frame[name][row]).__name__}, not text or a number")
                break
            if name == "label" and pd.api.types.is_float_dtype(frame[name]):
                fractional = sorted(set(frame[name][frame[name] % 1 != 0].tolist()))
                if fractional:
                    problems.append(f"data.label_column: numeric labels must be whole class numbers (0, 1, ...), "
                                    f"found {fractional[:5]} ({split} split)")
                    break
    return problems


def whole_numbers(labels: pd.Series) -> pd.Series:
    """Float labels that are whole numbers (1.0: how pandas reads a numeric column with a gap) as integers."""
    return labels.astype("int64") if pd.api.types.is_float_dtype(labels) else labels


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


def load_splits(spec: DataSpec, columns: dict[str, str] | None = None,
                encode: bool = True) -> tuple[dict[str, pd.DataFrame], list[str], int]:
    """The three splits (subsampled, checked non-empty); with `encode`, labels mapped to 0..K-1 and the class names."""
    columns = columns or classification_columns(spec)
    given, names, default_length = raw_splits(spec, columns)
    problems = content_problems(given, columns)
    if encode and not problems:
        given = {name: frame.assign(label=whole_numbers(frame["label"])) for name, frame in given.items()}
        classes = set(pd.concat([frame["label"] for frame in given.values()]).astype(str))
        if len(classes) < 2:
            problems.append(f"data.label_column: need at least 2 classes, found {sorted(classes)} in all of the data")
    sizes = {"train": spec.train_size, "validation": spec.validation_size, "test": spec.test_size}
    splits = {name: subsample(given[name], sizes[name], spec.seed) for name in SPLITS}
    problems += [f"data: the {name} split is empty ({len(pd.concat(given.values()))} usable rows in all; the "
                 f"validation and test splits are carved from the training file unless given)"
                 for name, frame in splits.items() if frame.empty]
    if problems:
        raise UserError(problems, "the data does not match the config")
    if not encode:
        return splits, [], spec.max_length or default_length
    encoded, names = encode_labels(splits, names, spec.num_labels)
    for name in SPLITS:
        splits[name] = splits[name].assign(label=encoded[name])
    return splits, names, spec.max_length or default_length


def pad_id(tokenizer) -> int:
    # Decoder tokenizers often have no pad token: any id works since padded positions are masked out.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
