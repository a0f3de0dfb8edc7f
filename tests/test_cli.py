import subprocess
import sys
from pathlib import Path

import yaml

from peftsweep.cli import main, parse_assignments


def trial_config(tmp_path: Path, model: str, csv: str, **extra) -> str:
    """A sweep config for `peftsweep train CONFIG`: its model, data and settings (methods and search unused)."""
    config = {"name": "one", "model": model, "data": {"train_file": csv, "max_length": 16},
              "output_dir": str(tmp_path / "out")} | extra
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_methods_lists_every_method_with_ranges(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ["lora", "qlora", "prefix", "prompt", "ptuning", "adapter", "ia3", "full"]:
        assert f"\n{name}: " in "\n" + out
    assert "r                      int [2, 64] log" in out
    assert "encoder_hidden_size" in out and "only when prefix_projection=True" in out


def test_assignments_parse_yaml_scalars():
    assert parse_assignments(["r=8", "lr=1e-2", "prefix_projection=true", "x=abc"], "--hp") == {
        "r": 8, "lr": 0.01, "prefix_projection": True, "x": "abc"}


def test_bad_hyperparameters_exit_2_with_every_problem_and_no_traceback(tiny_model, tiny_csv, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "peftsweep.cli", "train", trial_config(tmp_path, tiny_model, tiny_csv),
         "--method", "lora", "--hp", "r=0", "--hp", "rank=4"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "lora.r: must be >= 1, got 0" in proc.stderr
    assert "lora.rank: unknown hyperparameter" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_method_and_missing_model_exit_2(capsys, tmp_path):
    assert main(["train", "--method", "lorra"]) == 2
    assert "unknown method 'lorra'" in capsys.readouterr().err
    assert main(["train", "--set", f"model={tmp_path / 'missing'}", "--method", "lora"]) == 2
    assert "model: directory not found" in capsys.readouterr().err
    assert main(["train", "--set", "train.epochs=0", "--method", "lora"]) == 2  # the config's own checks
    assert "train.epochs: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_train_reports_model_and_hyperparameter_problems_together(capsys, tmp_path):
    assert main(["train", "--set", f"model={tmp_path / 'missing'}", "--method", "prompt", "--hp", "lr=-1"]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "prompt.lr: must be >= 1e-08" in err and "model: directory not found" in err


def test_train_one_generation_trial(tiny_causal, tiny_csv, tmp_path):
    """`peftsweep train CONFIG` of a generation sweep, with `--set resources.strategy=fsdp`: one real Ray Train trial
    of a prompt method on a causal LM, sharded over two workers (their generation kept in step, their checkpoint
    sharded); the memory plan printed first, as `run` prints it."""
    config = trial_config(tmp_path, tiny_causal, tiny_csv, task="generation",
                          data={"train_file": tiny_csv, "template": "{text} type:"})
    proc = subprocess.run(
        [sys.executable, "-m", "peftsweep.cli", "train", config, "--method", "prefix", "--hp", "num_virtual_tokens=2",
         "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "resources.num_workers=2",
         "--set", "resources.strategy=fsdp", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val_loss" in proc.stdout and "checkpoint:" in proc.stdout
    assert "strategy             fsdp" in proc.stdout
    assert "memory plan, GiB per worker" in proc.stdout and "prefix     fsdp over 2 workers" in proc.stdout
    checkpoint = Path(proc.stdout.split("checkpoint:")[-1].strip())
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "training_shards").is_dir()
    assert main(["train", config, "--method", "lora", "--set", "resources.strategy=ddp",
                 "--set", "resources.cpu_offload=true"]) == 2  # offload needs fsdp


def test_generation_options_need_the_generation_task(capsys, tiny_causal, tiny_csv, tmp_path):
    config = trial_config(tmp_path, tiny_causal, tiny_csv, data={"train_file": tiny_csv, "template": "{text}"})
    assert main(["train", config, "--method", "lora"]) == 2
    assert "data.template: only for task: generation (the task is classification)" in capsys.readouterr().err


def test_train_twice_with_other_hyperparameters_in_one_folder(tiny_model, tiny_csv, tmp_path):
    """The README's `peftsweep train --method lora --hp r=16`, then r=8 in the same folder (as a new user would): each
    configuration trains in a run of its own (the second once restored the first's checkpoint into a model of
    another shape and died with a traceback)."""
    config = trial_config(tmp_path, tiny_model, tiny_csv, train={"epochs": 1, "batch_size": 16},
                          resources={"num_workers": 1})

    def train(rank: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "peftsweep.cli", "train", config, "--method", "lora", "--hp", f"r={rank}",
             "--output", str(tmp_path / "runs")], capture_output=True, text=True, timeout=600)

    first, second = train(16), train(8)
    for proc in (first, second):
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "val_accuracy" in proc.stdout and "checkpoint:" in proc.stdout
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("lora-train-"))
    assert len(runs) == 2, runs
    checkpoint = {p: p.stdout.split("checkpoint: ")[1].split()[0] for p in (first, second)}
    assert Path(checkpoint[first]).parent != Path(checkpoint[second]).parent
