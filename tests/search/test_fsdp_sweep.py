"""A sweep whose trials shard (resources.strategy: fsdp) through Ray Tune and Ray Train, its driver SIGKILLed in the
middle and resumed: the trial once, tagged fsdp, counted as DDP counts, continued from its sharded checkpoint, its
checkpoints kept as configured; and the memory plan's refusal and `auto` choice before Ray starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from peftsweep.search.tracking.client import CHECKPOINT_TAG, STATUS_TAG
from tests.search.test_faults import finish, history, kill_group, log_tail, start, trial_runs, wait_until
from tests.tiny import CLASSIFY, make_csv

EPOCHS = 3
HANG_BOUND_S = 420


def write_config(directory: Path, model: str, csv: str, **sections) -> Path:
    config = {"name": "faults", "model": model, "output_dir": str(directory / "out"),
              "data": {"train_file": csv, "max_length": 16},
              # one trial (FSDP against DDP for every method: tests/trainers/test_fsdp.py, without Ray)
              "methods": {"lora": {"r": 4, "alpha_multiple": 2, "dropout": 0.0, "targets": "attention",
                                   "lr": 3e-2}},
              "search": {"algorithm": "grid"},
              "train": {"epochs": EPOCHS, "batch_size": 16, "checkpoints_to_keep": 2},
              "resources": {"num_workers": 2, "cpus_per_worker": 1, "strategy": "fsdp"}} | sections
    path = directory / "faults.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_an_fsdp_sweep_killed_and_resumed_runs_its_trial_once_from_the_shards(tmp_path, tiny_decoder):
    from peftsweep.trainers.model import build_model

    csv = str(make_csv(tmp_path / "data.csv", n=200))
    config = write_config(tmp_path, tiny_decoder, csv)
    first = start(config)
    try:
        # killed once a trial has reported its first epoch (and with it its sharded checkpoint)
        wait_until(lambda: any("val_accuracy" in r.data.metrics and r.info.status == "RUNNING"
                               for r in trial_runs(config)), first, 300, "a trial's first epoch")
        first.kill()  # SIGKILL
        first.wait(timeout=30)
    finally:
        kill_group(first)
    interrupted = {r.info.run_id for r in trial_runs(config) if r.info.status == "RUNNING"}
    assert interrupted
    resumed = start(config, "--resume")
    began = time.monotonic()
    try:
        assert finish(resumed, timeout=HANG_BOUND_S) == 0, log_tail(resumed)
    finally:
        kill_group(resumed)
    assert time.monotonic() - began < HANG_BOUND_S
    runs = trial_runs(config)
    assert [r.data.params["method"] for r in runs] == ["lora"]  # once
    from tests.tiny import LABELS
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags[STATUS_TAG] == "completed"
        assert run.data.tags["peftsweep.strategy"] == "fsdp" and run.data.tags["peftsweep.cpu_offload"] == "no"
        assert history(config, run.info.run_id) == list(range(1, EPOCHS + 1))  # every epoch once
        method = run.data.params["method"]
        hparams = yaml.safe_load(config.read_text())["methods"][method]
        _, counts, _ = build_model(tiny_decoder, method, hparams, sorted(LABELS), task=CLASSIFY)
        assert run.data.metrics["trainable_params"] == counts.trainable_params  # the whole model's, as under DDP
        # retention as under DDP: checkpoints_to_keep (2) of the 3 epochs' checkpoints, each whole (the method's
        # files and both ranks' shards)
        kept = sorted(p for p in Path(run.data.tags[CHECKPOINT_TAG]).parent.glob("checkpoint_*") if p.is_dir())
        assert len(kept) == 2, kept
        for checkpoint in kept:
            assert (checkpoint / "peftsweep.json").is_file() and (checkpoint / "training_state.pt").is_file()
            assert (checkpoint / "adapter_model.safetensors").is_file()
            assert (checkpoint / "training_shards" / ".metadata").is_file()
            assert len(list((checkpoint / "training_shards").glob("*.distcp"))) == 2  # one shard per rank
        assert "ddp_param_divergence" not in run.data.metrics
    continued = [r for r in runs if r.info.run_id in interrupted]
    assert continued and all(r.data.metrics["restarts"] >= 1 for r in continued)  # from its sharded checkpoint


def write_big(directory: Path, model: str, csv: str, **resources) -> Path:
    config = {"name": "big", "model": model, "output_dir": str(directory / "out"),
              "data": {"train_file": csv, "max_length": 16}, "methods": {"full": {}, "lora": {"r": [2, 4]}},
              "train": {"batch_size": 16},
              "resources": {"num_workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 1} | resources}
    path = directory / "big.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def plan_of(path: Path):
    from peftsweep.search.config import load_sweep_config
    from peftsweep.search.plan import build_plan

    return build_plan(load_sweep_config(path), available={"CPU": 4, "GPU": 4})


def test_auto_shards_what_does_not_fit_and_a_model_that_fits_nowhere_is_refused(tmp_path, tiny_decoder, tiny_csv):
    from peftsweep.errors import UserError
    from peftsweep.search.memory_check import format_plan

    roomy = plan_of(write_big(tmp_path, tiny_decoder, tiny_csv, gpu_memory_gb=100))
    assert roomy.strategies == {"full": "ddp", "lora": "ddp"}
    # 1.5 GiB of fixed overhead per device: between that and DDP's full fine-tune, auto shards full fine-tuning only
    overhead_gb = 1.5 * 2**30 / 1e9
    ddp_full = roomy.memory.methods["full"].plans[0].device / 1e9
    fsdp_full = roomy.memory.methods["full"].plans[1].device / 1e9
    lora = roomy.memory.methods["lora"].plans[0].device / 1e9
    assert overhead_gb < fsdp_full < ddp_full and lora < ddp_full
    middle = max(fsdp_full, lora) + (ddp_full - max(fsdp_full, lora)) / 2
    split = plan_of(write_big(tmp_path, tiny_decoder, tiny_csv, gpu_memory_gb=middle * 1e9 / 2**30))
    assert split.strategies == {"full": "fsdp", "lora": "ddp"}
    lines = "\n".join(format_plan(split.memory))
    assert "full       fsdp over 2 workers" in lines and "<- chosen" in lines
    with pytest.raises(UserError) as refused:
        plan_of(write_big(tmp_path, tiny_decoder, tiny_csv, gpu_memory_gb=1.0))
    text = "\n".join(refused.value.problems)
    assert "a full trial does not fit a worker" in text and "resources.cpu_offload: true" in text
    assert "GiB under ddp over 2 workers" in text and "GiB under fsdp over 2 workers" in text
    with pytest.raises(UserError) as ddp_only:  # asked for ddp: the way out names fsdp
        plan_of(write_big(tmp_path, tiny_decoder, tiny_csv, gpu_memory_gb=middle * 1e9 / 2**30, strategy="ddp"))
    assert "resources.strategy: fsdp" in "\n".join(ddp_only.value.problems)


def test_the_8b_cluster_example_validates_with_full_fine_tuning_sharded(tmp_path, capsys):
    """configs/llama8b-cluster.yaml, its model standing in by its shape (tests.tiny.make_8b_shaped_dir)."""
    from peftsweep.cli import main
    from tests.tiny import make_8b_shaped_dir

    model = make_8b_shaped_dir(tmp_path / "llama-8b-shaped")
    example = Path(__file__).resolve().parents[2] / "configs" / "llama8b-cluster.yaml"
    assert main(["validate", str(example), "--set", f"model={model}", "--address", "ray://head:10001"]) == 0
    out, err = capsys.readouterr()
    assert "device 79.0 GiB (resources.gpu_memory_gb)" in out
    rows = {tuple(line.split()[:2]): line for line in out.splitlines() if line.startswith("  ") and "over 8" in line}
    assert rows[("full", "ddp")].endswith(" no") and rows[("full", "fsdp")].endswith("yes <- chosen")
    assert rows[("lora", "ddp")].endswith("yes <- chosen")  # the frozen base in bf16: 16 GiB, no need to shard
    assert "OK" in out and "Warning" not in out + err
    assert "front over val acc (max), peak MiB (min), train s (min);" in out


def test_strategy_and_cpu_offload_per_method(tmp_path, tiny_decoder, tiny_csv):
    from peftsweep.errors import UserError

    per_method = {"full": {"strategy": "fsdp", "cpu_offload": True}, "lora": {"strategy": "ddp"}}
    plan = plan_of(write_big(tmp_path, tiny_decoder, tiny_csv, gpu_memory_gb=100, per_method=per_method))
    assert plan.strategies == {"full": "fsdp", "lora": "ddp"}
    full = plan.memory.methods["full"].chosen
    assert full.cpu_offload and full.host > 0 and plan.memory.methods["lora"].chosen.strategy == "ddp"
    template = {m: plan.config.resources.for_method(m, True, plan.strategies[m]) for m in plan.methods}
    assert (template["full"].strategy, template["full"].cpu_offload) == ("fsdp", True)
    assert (template["lora"].strategy, template["lora"].cpu_offload) == ("ddp", False)
    with pytest.raises(UserError) as refused:  # offload with ddp, where the user wrote it
        plan_of(write_big(tmp_path, tiny_decoder, tiny_csv, per_method={"lora": {"strategy": "ddp",
                                                                                  "cpu_offload": True}}))
    assert refused.value.problems == ["resources.per_method.lora.cpu_offload: needs strategy fsdp or auto for lora "
                                      "(ddp keeps the whole model on every device)"]
