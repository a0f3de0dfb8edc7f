"""Every kind of config mistake: exit code 2, one short message naming the key as written, no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peftsweep.cli import main
from peftsweep.search.config import load_sweep_config
from peftsweep.search.plan import build_plan
from peftsweep.spaces import REGISTRY

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))


def base(tiny_model: str, tiny_csv: str) -> dict:
    return {"name": "t", "model": tiny_model, "data": {"train_file": tiny_csv, "max_length": 16},
            "methods": {"lora": {}, "prompt": {"num_virtual_tokens": [2, 8]}}, "search": {"num_samples": 2}}


def nested_set(config: dict, dotted: str, value) -> dict:
    node = config
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(leaf)
    else:
        node[leaf] = value
    return config


DELETE = object()

# (what is changed, new value, text the message must contain)
MISTAKES = [
    ("bogus", 1, "bogus: unknown key"),
    ("metric", "exact_match", "metric: exact_match is not a quality of task classification"),
    ("forgetting", {"preset": "speeches"}, "forgetting: not for task: classification (a classifier has a new head"),
    ("objectives", ["accuracy", "forgetting"], "objectives: forgetting needs a forgetting: section"),
    ("evaluate.lm_eval", {"tasks": ["arc_easy"]}, "evaluate.lm_eval: not for task: classification (lm-eval scores"),
    ("search.num_sample", 5, "search.num_sample: unknown key"),
    ("search.start_with_defaults", True, "search.start_with_defaults: renamed: search.start_points"),
    ("search.start_points", "cheapest", "search.start_points: Input should be 'smallest', 'defaults' or 'none'"),
    ("search.num_samples", "ten", "search.num_samples: Input should be a valid integer"),
    ("search.num_samples", 0, "search.num_samples: Input should be greater than or equal to 1"),
    ("search.algorithm", "bayes", "search.algorithm: Input should be 'tpe', 'nsga2', 'random' or 'grid'"),
    ("search.max_concurrent_trials", -1, "search.max_concurrent_trials: Input should be greater than or equal"),
    ("early_stopping.objective", "hypervolume", "early_stopping.objective: Input should be 'pareto' or 'accuracy'"),
    ("confirm.seeds", -1, "confirm.seeds: a whole number of seeds from 0 to 100, or auto (got -1)"),
    ("confirm.seeds", "many", "confirm.seeds: a whole number of seeds from 0 to 100, or auto (got 'many')"),
    ("confirm.max_seeds", 2, "confirm.max_seeds: Input should be greater than or equal to 3"),
    ("confirm.margin", -0.01, "confirm.margin: Input should be greater than or equal to 0"),
    ("confirm.failed_runs", "ignore", "confirm.failed_runs: Input should be 'withhold' or 'floor'"),
    ("confirm.confidence", 1.5, "confirm.confidence: Input should be less than 1"),
    ("confirm.seed", 3, "confirm.seed: unknown key"),
    ("model", DELETE, "model: Field required"),
    ("model", "./no/such/model", "model: directory not found: ./no/such/model"),
    ("methods.lorra", {}, "methods.lorra: unknown method"),
    ("methods.lora", {"rank": [2, 4]}, "methods.lora.rank: unknown hyperparameter"),
    ("methods.lora", {"r": [32, 4]}, "methods.lora.r: low (32) is greater than high (4)"),
    ("methods.lora", {"r": [0, 4]}, "methods.lora.r: low must be >= 1, got 0"),
    ("methods.lora", {"r": [2.5, 4]}, "methods.lora.r: must be integers"),
    ("methods.lora", {"alpha_multiple": [3]}, "methods.lora.alpha_multiple: must be one of"),
    ("methods.lora", {"lr": [0, 1e-3]}, "methods.lora.lr: low must be >= 1e-08"),
    ("methods.lora", {"r": [1, 2, 3]}, "methods.lora.r: a range is [low, high]"),
    ("methods.prompt", {"num_virtual_tokens": [4, 64]}, "methods.prompt.num_virtual_tokens: high 64 exceeds 15"),
    ("data.train_file", "/no/such.csv", "data.train_file: file not found: /no/such.csv"),
    ("data.preset", "trec6", "data: give exactly one of preset, train_file, hub_dataset"),
    ("data.text_column", "sentence", "data: data.train_file"),
    ("data.num_labels", 4, "data.num_labels is 4 but the data has 3 classes"),
    ("data.max_length", 1, "data.max_length: Input should be greater than or equal to 2"),
    ("train.epochs", 0, "train.epochs: Input should be greater than or equal to 1"),
    ("train.precision", "fp8", "train.precision: Input should be 'auto', 'fp32' or 'bf16'"),
    ("resources.num_workers", 0, "resources.num_workers: Input should be greater than or equal to 1"),
    ("resources.per_method.full", {"num_workers": 2}, "resources.per_method.full: not a method of this sweep"),
    ("resources.per_method.lora", {"workers": 2}, "resources.per_method.lora.workers: unknown key"),
    ("early_stopping", {"enabled": True, "grace_period": 3}, "early_stopping.grace_period: 3 must be below"),
    ("train.max_failures", -1, "train.max_failures: Input should be greater than or equal to 0"),
    ("train.checkpoints_to_keep", 0, "train.checkpoints_to_keep: Input should be greater than or equal to 1"),
    ("search.time_budget_s", 0, "search.time_budget_s: Input should be greater than 0"),
    ("delete_dominated_checkpoints", "some", "delete_dominated_checkpoints: Input should be a valid boolean"),
    ("tracking.url", "http://x", "tracking.url: unknown key"),
    ("storage", "ftp://host/x", "storage: unsupported scheme 'ftp'"),
    ("resources.gpus_per_worker", "all", "resources.gpus_per_worker: GPUs per worker: a number >= 0, "
                                         "or auto (got 'all')"),
    ("resources.per_method.lora", {"gpus_per_worker": -1}, "resources.per_method.lora.gpus_per_worker: GPUs per "
                                                           "worker: a number >= 0"),
    ("tracking.uri", "http://127.0.0.1:9", "tracking.uri: cannot reach the MLflow server at http://127.0.0.1:9"),
    ("data.task", "trec6", "data.task: renamed: data.preset"),
    ("data.template", "{text} type:", "data.template: only for task: generation"),
    ("generation", {"match": "exact"}, "generation: only for task: generation"),
    ("task", "generation", "model: a bert model (BertForSequenceClassification) has no causal-LM head"),
    ("task", "translation", "task: Input should be 'classification' or 'generation'"),
    ("name", "../../escaped", "name: a plain name, not a path"),
    ("name", "a\\b", "name: a plain name, not a path"),
    ("name", ".hidden", "name: a plain name, not a path"),
    ("name", "two\nlines", "name: control characters"),
    ("name", "  ", "name: must not be empty"),
    ("output_dir", "__FILE__", "exists and is not a folder"),
    ("output_dir", "__FILE__/sub", "is a file, so"),
    ("storage", "__FILE__", "a-file exists and is not a folder"),
    ("storage", "file://__FILE__/sub", "is a file, so"),
    ("data.max_length", 100000, "data.max_length: 100000 is more than the 64 positions the model takes"),
]


@pytest.mark.parametrize("key,value,expected", MISTAKES, ids=[m[0] + "-" + str(i) for i, m in enumerate(MISTAKES)])
def test_malformed_config_exits_2_naming_the_key(key, value, expected, tiny_model, tiny_csv, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    out = tmp_path / "out"
    if isinstance(value, str) and "__FILE__" in value:  # a path that exists and is a file
        (tmp_path / "a-file").write_text("x")
        value = value.replace("__FILE__", str(tmp_path / "a-file"))
    before = set(tmp_path.rglob("*"))
    path.write_text(yaml.safe_dump(nested_set(base(tiny_model, tiny_csv) | {"output_dir": str(out)}, key, value)))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert len(err.splitlines()) <= 25  # one screen
    assert not out.exists()  # found before anything was written: no MLflow store, no Ray state
    assert set(tmp_path.rglob("*")) == before | {path}  # nothing at all, anywhere (a name is never a path)


def generation_base(tiny_causal: str, tiny_csv: str) -> dict:
    return {"name": "g", "model": tiny_causal, "task": "generation",
            "data": {"train_file": tiny_csv, "template": "{text} type:"},
            "methods": {"lora": {}, "prompt": {"num_virtual_tokens": [2, 4]}}, "search": {"num_samples": 2}}


GENERATION_MISTAKES = [
    ("data.template", "{question} type:", "has no column 'question'"),
    ("data.template", "{text type:", "data.template:"),
    ("data.template", DELETE, "has no column 'prompt', 'target'"),
    ("data.label_words", ["a", "b"], "data.label_words: 2 words for 3 classes"),
    ("data.max_length", 2, "do not fit data.max_length 2"),
    ("data.chat_template", True, "data.chat_template: the model's tokenizer has no chat template"),
    ("generation.match", "fuzzy", "generation.match: Input should be 'normalized' or 'exact'"),
    ("generation.max_new_tokens", 0, "generation.max_new_tokens: Input should be greater than or equal to 1"),
    ("generation.scoring", "extract", "generation: scoring: extract needs generation.answer_pattern"),
    ("data.choices_column", "options", "data.choices_column: not with data.template"),
    ("metric", "mcc", "metric: mcc is not a quality of task generation (it has accuracy, exact_match)"),
    ("metric", "f1", "metric: not a quality (choose from accuracy, exact_match, macro_f1, mcc)"),
    ("objectives", ["mcc", "trainable_pct"], "objectives[0]: mcc is not a quality of task generation"),
    ("forgetting", {"text_file": "no-such.txt"}, "forgetting.text_file: file not found: no-such.txt"),
    ("forgetting", {"preset": "speeches", "text_file": "a.txt"}, "forgetting: give exactly one of text_file"),
    ("forgetting", {}, "forgetting: give exactly one of text_file (a plain-text file) or preset (speeches)"),
    ("forgetting", {"preset": "wiki"}, "forgetting.preset: Input should be 'speeches'"),
    ("constraints", {"forgetting": 0.1}, "constraints: forgetting needs a forgetting: section"),
    ("evaluate.lm_eval", {"tasks": []}, "evaluate.lm_eval.tasks: List should have at least 1 item"),
    ("evaluate.lm_eval", {"tasks": ["toy"], "include_path": "no-such-dir"},  # .ci/run installs peftsweep[eval]
     "evaluate.lm_eval.include_path: not a folder: no-such-dir"),
]


@pytest.mark.parametrize("key,value,expected", GENERATION_MISTAKES,
                         ids=[m[0] + "-" + str(i) for i, m in enumerate(GENERATION_MISTAKES)])
def test_generation_mistakes_exit_2_naming_the_key(key, value, expected, tiny_causal, tiny_csv, tmp_path, capsys):
    path, out = tmp_path / "bad.yaml", tmp_path / "out"
    config = nested_set(generation_base(tiny_causal, tiny_csv) | {"output_dir": str(out)}, key, value)
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not out.exists()


def test_generation_config_validates(tiny_causal, tiny_csv, tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(generation_base(tiny_causal, tiny_csv) | {"output_dir": str(tmp_path / "out")}))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_every_problem_is_reported_at_once(tiny_model, tiny_csv, tmp_path, capsys):
    config = base(tiny_model, tiny_csv) | {"methods": {"lora": {"r": [8, 2]}, "bogus": {}}}
    config["resources"] = {"per_method": {"full": {}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and "methods.lora.r" in err and "methods.bogus" in err and "per_method.full" in err


def test_malformed_yaml_and_set_override(tmp_path, capsys, tiny_model, tiny_csv):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    assert main(["validate", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base(tiny_model, tiny_csv)))
    assert main(["validate", str(good), "--set", "search.num_samples=abc"]) == 2
    assert "search.num_samples: Input should be a valid integer" in capsys.readouterr().err
    assert main(["validate", str(good), "--set", "search.num_samples=7"]) == 0
    assert "tpe x 7 trials" in capsys.readouterr().out


def test_positions_left_for_virtual_tokens_say_to_lower_max_length(tiny_model, tiny_csv, tmp_path, capsys):
    config = base(tiny_model, tiny_csv) | {"methods": {"prompt": {}}}
    config["data"]["max_length"] = 62  # the tiny model takes 64 positions: 2 left for a soft prompt of at least 4
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    assert ("methods.prompt: num_virtual_tokens needs at least 4, but data.max_length 62 allows at most 2; lower "
            "data.max_length to at most 60 (the model takes 64 positions") in capsys.readouterr().err


def break_weights(model: Path) -> None:
    (model / "model.safetensors").unlink()


def cut_weights_short(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])


def random_weights(model: Path) -> None:
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 20)


def index_without_shards(model: Path) -> None:
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))


def bin_not_a_checkpoint(model: Path) -> None:
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"not a checkpoint")


def no_tokenizer_files(model: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        (model / name).unlink(missing_ok=True)


BROKEN_MODELS = [
    (break_weights, "has no weights (looked for model.safetensors"),
    (cut_weights_short, "model.safetensors is not a readable safetensors file"),
    (random_weights, "model.safetensors is not a readable safetensors file"),
    (index_without_shards, "names 1 shard(s) that are not there: model-00002-of-00002.safetensors"),
    (bin_not_a_checkpoint, "pytorch_model.bin is not a PyTorch checkpoint"),
    # transformers builds a tokenizer of the special tokens alone: every word would train as the unknown token
    (no_tokenizer_files, "its vocabulary files (tokenizer.json, vocab.txt, ...) are missing"),
]


@pytest.mark.parametrize("damage,expected", BROKEN_MODELS, ids=[b[0].__name__ for b in BROKEN_MODELS])
def test_a_broken_model_directory_exits_2_naming_it(damage, expected, tiny_model, tiny_csv, tmp_path, capsys):
    """A model directory with missing or damaged weights or tokenizer: refused before the sweep starts (else every
    trial fails in its workers, or trains on unknown tokens)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    damage(model)
    path, out = tmp_path / "bad.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(base(str(model), tiny_csv) | {"output_dir": str(out)}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"model: {model}" in err and expected in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_model_path_that_is_a_file_is_named_as_such(tiny_model, tiny_csv, tmp_path, capsys):
    path, file = tmp_path / "bad.yaml", tmp_path / "config.json"
    file.write_text("{}")
    path.write_text(yaml.safe_dump(base(str(file), tiny_csv)))
    assert main(["validate", str(path)]) == 2
    assert f"model: {file} is a file; a model is a directory" in capsys.readouterr().err


def test_a_config_that_is_not_text_exits_2(tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 4)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and "Traceback" not in err


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception) as err:
        load_sweep_config(path)
    assert "not valid YAML" in str(err.value)


def test_no_traceback_from_the_command_line(tmp_path, tiny_model, tiny_csv):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base(tiny_model, tiny_csv) | {"bogus": 1}))
    proc = subprocess.run([sys.executable, "-m", "peftsweep.cli", "run", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "bogus: unknown key" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_presets_validate(path, tmp_path):
    from peftsweep.trainers.bundled import BUNDLED_MODELS
    from tests.tiny import make_8b_shaped_dir

    config = load_sweep_config(path)
    if config.model not in BUNDLED_MODELS:  # a hub model (the 8B cluster example): its shape stands in, offline
        config = load_sweep_config(path, {"model": str(make_8b_shaped_dir(tmp_path / "model"))})
    plan = build_plan(config)
    assert plan.methods and plan.data.num_labels >= 2 and plan.memory is not None


def test_demo_preset_covers_every_method():
    config = load_sweep_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    plan = build_plan(config)
    assert set(plan.methods) == set(REGISTRY) and config.search.start_points != "none"
    assert config.search.num_samples >= 12
