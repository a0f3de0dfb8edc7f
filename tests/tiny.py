"""Tiny, deterministic test assets: a 2-layer BERT built from a config, a word-level vocab, learnable toy data."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KEYWORDS = ["apple", "river", "engine"]  # the label is which keyword a sentence contains
FILLER = ["the", "a", "is", "of", "and", "to", "in", "it", "was", "on", "big", "small", "red", "old", "new", "very"]
LABELS = ["fruit", "nature", "machine"]
SHARED_EXPERIMENT = "tiny-sweeps"  # the shared test sweep's MLflow experiment (tests/conftest.py)
SWEEP_TRIALS = 5  # trials in the shared small sweep of tests/conftest.py


def write_tokenizer(directory: Path) -> int:
    """The toy word-level tokenizer, saved beside the model; returns the vocabulary size."""
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + KEYWORDS + FILLER) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (it ignores `vocab_file`, leaving every word [UNK])
    BertTokenizerFast(vocab=str(vocab), do_lower_case=True).save_pretrained(directory)
    return len(SPECIAL + KEYWORDS + FILLER)


def make_model_dir(directory: Path, num_labels: int = 3, hidden: int = 32, layers: int = 2) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=write_tokenizer(directory), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=64,
                        num_labels=num_labels)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def make_rows(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(len(KEYWORDS))
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), KEYWORDS[label])
        rows.append({"text": " ".join(words), "label": LABELS[label]})
    return pd.DataFrame(rows)


def make_csv(path: Path, n: int = 96, seed: int = 0) -> Path:
    make_rows(n, seed).to_csv(path, index=False)
    return path


def make_decoder_dir(directory: Path, num_labels: int = 3, hidden: int = 32, layers: int = 2) -> Path:
    """A 2-layer Llama with a sequence-classification head, sharing the toy word-level tokenizer."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=write_tokenizer(directory), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * hidden,
                         max_position_embeddings=64, num_labels=num_labels, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    return directory


# Generation: the same toy task as prompt -> answer. The answer words and the template's words join the vocabulary.
ANSWER_TEMPLATE = "{text} type:"
CAUSAL_VOCAB = SPECIAL + KEYWORDS + FILLER + LABELS + ["type", ":"]


def write_causal_tokenizer(directory: Path) -> int:
    """The toy word-level tokenizer with an end-of-sequence token ([SEP]), for a causal LM."""
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(CAUSAL_VOCAB) + "\n")
    BertTokenizerFast(vocab=str(vocab), do_lower_case=True, eos_token="[SEP]").save_pretrained(directory)
    return len(CAUSAL_VOCAB)


def make_causal_dir(directory: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A 2-layer Llama causal LM with tied embeddings (as SmolLM2), random weights, the toy tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=write_causal_tokenizer(directory), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * hidden,
                         max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                         eos_token_id=CAUSAL_VOCAB.index("[SEP]"), tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def make_8b_shaped_dir(directory: Path) -> Path:
    """A directory that passes for Llama-3.1-8B where only its config and tokenizer are read (validate, the memory
    plan): its shape with SmolLM2's vocabulary and tokenizer, and a weights file holding no tensors."""
    import shutil

    from safetensors.torch import save_file
    from transformers import AutoConfig, LlamaConfig

    from peftsweep.trainers.bundled import resolve_bundled

    small = Path(resolve_bundled("SmolLM2-135M-Instruct"))
    directory.mkdir(parents=True, exist_ok=True)
    for f in small.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, directory / f.name)
    ref = AutoConfig.from_pretrained(small)
    LlamaConfig(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=ref.vocab_size, tie_word_embeddings=False,
                max_position_embeddings=8192, bos_token_id=ref.bos_token_id, eos_token_id=ref.eos_token_id,
                pad_token_id=ref.pad_token_id, architectures=["LlamaForCausalLM"]).save_pretrained(directory)
    save_file({}, str(directory / "model.safetensors"))
    return directory


def _task_kinds():
    from peftsweep.spaces import TaskName
    from peftsweep.trainers.tasks import get_task

    return get_task(TaskName.CLASSIFICATION), get_task(TaskName.GENERATION)


CLASSIFY, GENERATE = _task_kinds()  # the two task kinds, as the functions that act by task kind receive them


LM_EVAL_TASK = "toy_choice"  # a local lm-eval task (write_lm_eval_task)


def write_lm_eval_task(directory: Path, n: int = 40, seed: int = 11) -> list[dict]:
    """A multiple-choice lm-eval task of the toy data (which keyword's class, after ANSWER_TEMPLATE's words), as YAML
    over a local JSON-lines file in `directory` (lm-eval's `include_path`); returns its rows."""
    import json

    rows = [{"text": r.text, "choices": LABELS, "answer": LABELS.index(r.label)} for r in make_rows(n, seed).itertuples()]
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "toy.yaml").write_text(
        f"task: {LM_EVAL_TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{text}} type:'\ndoc_to_choice: choices\n"
        "doc_to_target: answer\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")
    return rows
