"""What peftsweep costs over the training itself.

The same training (model, data, method, epochs, batch, workers) run three ways:
  (a) a bare PyTorch + PEFT loop in one process (threads = the workers' CPUs together),
  (b) a raw Ray Train job: `TorchTrainer.fit()` with a hand-written train function (DDP, a checkpoint per epoch),
      and (b') the same job without the two helper actors a sweep's trials leave out (ray_private.LeanTorchTrainer),
  (c) a one-trial peftsweep sweep (`search.orchestration.sweep.run_sweep`: Tune, Ray Train, MLflow, summary); with
      one worker the trial trains in its Tune trial's process, and (c0), the same sweep with `resources.in_process:
      false` (a Ray Train job), is run too,
each split into start-up (call to first training step), training (first step to last report) and teardown (last
report to return). Ray is started once before (b) and (c) and timed on its own; (c)'s once-per-sweep set-up (MLflow
store, parent run, Tune start) is shown apart from the per-trial cost. Ray's own processes run with peftsweep's
settings (peftsweep.environment: health checks every 0.2 s, no preemption watcher) in (b) as in (c); the default
health-check interval is measured apart.

    .venv/bin/python bench/overhead.py            # MiniLM-L6 + TREC-6 (800 train), LoRA, 2 epochs, 2 workers
    .venv/bin/python bench/overhead.py --workers 1 --breakdown   # 1 worker; (c)'s start-up split into its parts
    .venv/bin/python bench/overhead.py --quick    # tiny BERT, toy data: proves the script runs (no timing claims)

`--breakdown` turns on peftsweep's start-up marks (peftsweep.startup_marks) for (c) and prints where its trial's
start-up went, from Tune starting the trial to the first optimizer step, and what importing the recipe's modules
costs a fresh process (what each new worker process pays).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import WORKLOADS, tiny_assets  # also puts the repository on sys.path and sets the environment


@dataclass
class Setup:
    model: str
    data: dict
    method: str = WORKLOADS["overhead"]["method"]
    epochs: int = 2
    batch_size: int = 32
    workers: int = 2
    group_by_length: bool = True  # train.group_by_length, in all three


@dataclass
class Timing:
    startup: float
    training: float
    teardown: float

    @property
    def total(self) -> float:
        return self.startup + self.training + self.teardown


def full_setup() -> Setup:
    return Setup("all-MiniLM-L6-v2", {"preset": "trec6", "train_size": 800, "validation_size": 500, "test_size": 500})


def quick_setup(directory: Path) -> Setup:
    model, data = tiny_assets(directory, n=300)
    return Setup(model, data, epochs=1, batch_size=16)


def hparams(setup: Setup) -> dict:
    from peftsweep.spaces import get_method

    return get_method(setup.method).defaults()


def tokenized(setup: Setup):
    from peftsweep.trainers.data import DataSpec
    from peftsweep.trainers.launch import prepare_data
    from peftsweep.trainers.classification import TASK as CLASSIFY

    return prepare_data(setup.model, DataSpec(**setup.data), task=CLASSIFY)


def bare_loop(setup: Setup, data) -> Timing:
    """(a) One process, no Ray: build, train, validate each epoch, test."""
    import torch

    from peftsweep.trainers.config import TrainSettings
    from peftsweep.trainers.classification import TASK as CLASSIFY, evaluate, train_loader
    from peftsweep.trainers.loop import begin_epoch, optimizer_for, seed_everything, train_epoch
    from peftsweep.trainers.model import build_model

    torch.set_num_threads(setup.workers)
    start = time.perf_counter()
    seed_everything(0)
    hp = hparams(setup)
    model, _, _ = build_model(setup.model, setup.method, hp, data.label_names, pad_token_id=data.pad_token_id,
                              task=CLASSIFY)
    settings = TrainSettings(epochs=setup.epochs, batch_size=setup.batch_size)
    grouped = setup.group_by_length
    loader = train_loader(data.splits["train"], setup.batch_size, data.pad_token_id, 0, grouped)
    optimizer, scheduler = optimizer_for(model, hp["lr"], settings, len(loader) * setup.epochs)
    first_step = time.perf_counter()
    cpu = torch.device("cpu")
    for epoch in range(1, setup.epochs + 1):
        begin_epoch(loader, 0, epoch)
        train_epoch(model, loader, optimizer, scheduler, settings, cpu)
        evaluate(model, data.splits["validation"], data.num_labels, data.pad_token_id, 128, cpu,
                 in_length_order=grouped)
    evaluate(model, data.splits["test"], data.num_labels, data.pad_token_id, 128, cpu, in_length_order=grouped)
    return Timing(first_step - start, time.perf_counter() - first_step, 0.0)


def raw_train_fn(config: dict) -> None:
    """(b) What a Ray Train user writes by hand for the same training."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from peftsweep.spaces import get_method
    from peftsweep.trainers.config import TrainSettings
    from peftsweep.trainers.classification import TASK as CLASSIFY, evaluate, train_loader
    from peftsweep.trainers.loop import begin_epoch, optimizer_for, seed_everything, train_epoch
    from peftsweep.trainers.model import build_model

    data = ray.get(config["data"])
    setup = Setup(**config["setup"])
    context = ray.train.get_context()
    world, rank = context.get_world_size(), context.get_world_rank()
    torch.set_num_threads(1)
    seed_everything(0)
    hp = hparams(setup)
    model, _, _ = build_model(setup.model, setup.method, hp, data.label_names, pad_token_id=data.pad_token_id,
                              task=CLASSIFY)
    ddp = ray.train.torch.prepare_model(model)
    settings = TrainSettings(epochs=setup.epochs, batch_size=setup.batch_size)
    grouped = setup.group_by_length
    loader = ray.train.torch.prepare_data_loader(
        train_loader(data.splits["train"], setup.batch_size // world, data.pad_token_id, 0, grouped, rank, world),
        add_dist_sampler=not grouped)
    optimizer, scheduler = optimizer_for(ddp, hp["lr"], settings, len(loader) * setup.epochs)
    started = time.time()
    cpu = torch.device("cpu")
    for epoch in range(1, setup.epochs + 1):
        begin_epoch(loader, 0, epoch)
        train_epoch(ddp, loader, optimizer, scheduler, settings, cpu)
        metrics = {"val": evaluate(model, data.splits["validation"], data.num_labels, data.pad_token_id, 128,
                                   cpu, in_length_order=grouped)["accuracy"]}
        if epoch == setup.epochs:
            evaluate(model, data.splits["test"], data.num_labels, data.pad_token_id, 128, cpu,
                     in_length_order=grouped)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                get_method(setup.method).save(model, Path(tmp))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics | {"started": started, "reported_at": time.time()}, checkpoint=checkpoint)


def raw_ray_train(setup: Setup, data_ref, storage: Path, lean: bool = False) -> Timing:
    """`lean`: the same job without Ray Train's DatasetManager and PlacementGroupCleaner actors (peftsweep's
    LeanTorchTrainer, what a sweep's trials run)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from peftsweep.search.orchestration.ray_private import LeanTorchTrainer

    start = time.time()
    result = (LeanTorchTrainer if lean else TorchTrainer)(raw_train_fn, train_loop_config={"data": data_ref, "setup": asdict(setup)},
                          scaling_config=ScalingConfig(num_workers=setup.workers),
                          run_config=RunConfig(name=f"raw-{time.time_ns()}", storage_path=str(storage))).fit()
    end = time.time()
    m = result.metrics
    return Timing(m["started"] - start, m["reported_at"] - m["started"], end - m["reported_at"])


def peftsweep_sweep(setup: Setup, out: Path, in_process: bool = True) -> tuple[Timing, dict]:
    """(c) The same trial as a one-trial sweep; returns its timing and the sweep-level parts. `in_process`: a
    1-worker trial trains in its Tune trial's process (the default), else as a Ray Train job."""
    from mlflow.tracking import MlflowClient

    from peftsweep.search.config import SweepConfig
    from peftsweep.search.plan import build_plan
    from peftsweep.search.orchestration.sweep import run_sweep

    config = SweepConfig.model_validate({
        "name": "overhead", "model": setup.model, "data": setup.data, "output_dir": str(out),
        "methods": {setup.method: {k: v for k, v in hparams(setup).items()}},
        "train": {"epochs": setup.epochs, "batch_size": setup.batch_size,
                  "group_by_length": setup.group_by_length},
        "search": {"algorithm": "random", "num_samples": 1},
        "resources": {"num_workers": setup.workers, "cpus_per_worker": 1, "in_process": in_process}})
    t0 = time.time()
    plan = build_plan(config)  # validation and tokenization: once per sweep
    t_plan = time.time()
    outcome = run_sweep(plan)
    end = time.time()
    run = MlflowClient(outcome.tracking_uri).get_run(outcome.summary.trials[0].run_id)
    trial_start = run.info.start_time / 1000
    first_step = trial_start + run.data.metrics["startup_seconds"]
    last_report = trial_start + run.data.metrics["wall_seconds"]
    parts = {"plan_seconds": t_plan - t0, "sweep_setup_seconds": trial_start - t_plan,
             "trial_startup_seconds": first_step - trial_start, "after_trial_seconds": end - last_report}
    return Timing(first_step - t_plan, last_report - first_step, end - last_report), parts


def ray_session(health_check_s: str | None):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if health_check_s is None:
        os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
    else:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = health_check_s
    start = time.time()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return time.time() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and data; skips the settings comparison")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--workers", type=int, default=2, help="workers per trial (1 CPU each); bare PyTorch gets "
                        "as many threads")
    parser.add_argument("--breakdown", action="store_true", help="split (c)'s trial start-up into its parts")
    parser.add_argument("--no-group-by-length", action="store_true",
                        help="uniformly shuffled batches in all three (train.group_by_length: false)")
    args = parser.parse_args(argv)
    import ray

    from peftsweep import startup_marks

    work = Path(tempfile.mkdtemp(prefix="peftsweep-overhead-"))
    setup = quick_setup(work) if args.quick else full_setup()
    setup.workers = args.workers
    setup.group_by_length = not args.no_group_by_length
    marks_dir = work / "marks"
    if args.breakdown:  # read by every process the sweep starts (Ray's inherit the environment of ray.init)
        os.environ[startup_marks.ENV] = str(marks_dir)
    t = time.perf_counter()
    data = tokenized(setup)
    tokenize_s = time.perf_counter() - t
    figures: dict = {"setup": asdict(setup), "tokenize_seconds": tokenize_s}

    a = bare_loop(setup, data)
    if not args.quick:  # Ray Train's default health-check interval against the 0.2 s peftsweep sets
        figures["ray_init_seconds_default"] = ray_session(None)
        figures["raw_default_health_check"] = asdict(raw_ray_train(setup, ray.put(data), work / "ray"))
    figures["ray_init_seconds"] = ray_session("0.2")
    b = raw_ray_train(setup, ray.put(data), work / "ray")
    figures["raw_lean"] = asdict(raw_ray_train(setup, ray.put(data), work / "ray", lean=True))
    if setup.workers == 1:  # (c) as it ran before trials trained in process: a Ray Train job of 1 worker
        c0, parts0 = peftsweep_sweep(setup, work / "sweep-train-job", in_process=False)
        figures |= {"peftsweep_train_job": asdict(c0), "peftsweep_train_job_parts": parts0}
        if args.breakdown:
            figures["breakdown_train_job"] = breakdown(startup_marks.read_marks(marks_dir))
            shutil.rmtree(marks_dir, ignore_errors=True)
    c, parts = peftsweep_sweep(setup, work / "sweep")
    ray.shutdown()
    if args.breakdown:
        figures["breakdown"] = breakdown(startup_marks.read_marks(marks_dir))
        figures["recipe_import_seconds"] = recipe_import_seconds()
    figures |= {"bare": asdict(a), "raw_ray_train": asdict(b), "peftsweep": asdict(c), "peftsweep_parts": parts,
                "c_over_a": c.total / a.total, "c_over_b": c.total / b.total,
                "trial_c_over_b": (parts["trial_startup_seconds"] + c.training + parts["after_trial_seconds"])
                / b.total}
    print_table(figures, a, b, c)
    if args.breakdown:
        print_breakdown(figures, setup.workers)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


# What each part of the start-up is: the part that ends at each mark (peftsweep.startup_marks).
PARTS = {
    "trial_logged": "Tune starts the trial: the trial logger's MLflow calls",
    "trial_function": "the trial's process runs its function (Tune)",
    "fit_called": "the trial hands its job to Ray Train",
    "controller_started": "Ray Train's controller actor starts",
    "worker_group_starting": "the controller starts its worker group",
    "workers_created": "placement group + worker processes",
    "workers_ready": "train context + process group (imports torch)",
    "recipe_started": "the train function reaches the workers (imports transformers, peft)",
    "data_ready": "tokenized data from the object store",
    "model_ready": "model load + method applied + DDP",
    "first_step": "data loader, optimizer, first training step",
}


def breakdown(marks: dict[str, float]) -> list[dict]:
    """The start-up's parts, each from the previous mark present to its own (a mark a path does not pass is absent:
    its time falls into the next part)."""
    if "trial_start" not in marks:
        return []
    rows, previous = [], marks["trial_start"]
    for what, label in PARTS.items():
        if what in marks:
            rows.append({"part": label, "ends_at": what, "seconds": marks[what] - previous})
            previous = marks[what]
    rows.append({"part": "total, Tune starting the trial to its first step", "ends_at": "",
                 "seconds": previous - marks["trial_start"]})
    if "tune_fit" in marks:
        rows.append({"part": "(once per sweep: Tune's start to its first trial's start, the trial's process)",
                     "ends_at": "trial_start", "seconds": marks["trial_start"] - marks["tune_fit"]})
    if "process_created" in marks and "fit_called" in marks:
        rows.append({"part": "(the newest worker process started after fit() by)", "ends_at": "process_created",
                     "seconds": marks["process_created"] - marks["fit_called"]})
    return rows


def recipe_import_seconds() -> float:
    """What a fresh Python process spends importing the recipe's modules (torch, transformers, peft, Ray Train)."""
    import subprocess
    import sys

    probe = "import time; t = time.perf_counter(); import peftsweep.trainers.recipe; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return float(out.stdout.split()[-1])


def print_breakdown(f: dict, workers: int) -> None:
    for key, what in (("breakdown_train_job", "(c0)'s trial start-up, a Ray Train job of 1 worker"),
                      ("breakdown", f"(c)'s trial start-up, {workers} worker(s)")):
        if key not in f:
            continue
        print(f"\n{what} (latest rank at each mark), seconds:")
        for row in f[key]:
            print(f"  {row['part']:76}{row['seconds']:6.2f}")
    print(f"  importing the recipe's modules in a fresh process: {f['recipe_import_seconds']:.2f} s")


def print_table(f: dict, a: Timing, b: Timing, c: Timing) -> None:
    print(f"\nsetup: {f['setup']}")
    print(f"tokenize once: {f['tokenize_seconds']:.1f} s; ray.init: {f['ray_init_seconds']:.1f} s")
    print(f"{'':28}{'start-up':>10}{'training':>10}{'teardown':>10}{'total':>10}")
    rows = [("(a) bare PyTorch+PEFT", a), ("(b) raw Ray Train", b), ("(b') (b), lean", Timing(**f["raw_lean"]))]
    if "peftsweep_train_job" in f:
        rows.append(("(c0) peftsweep, Train job", Timing(**f["peftsweep_train_job"])))
    rows.append(("(c) peftsweep, 1 trial", c))
    for name, t in rows:
        print(f"{name:28}{t.startup:10.1f}{t.training:10.1f}{t.teardown:10.1f}{t.total:10.1f}")
    p = f["peftsweep_parts"]
    print(f"(c) split: validate+tokenize {p['plan_seconds']:.1f} s (before Ray work, once per sweep), "
          f"sweep set-up {p['sweep_setup_seconds']:.1f} s (MLflow store + parent run + Tune start, once per sweep), "
          f"trial start-up {p['trial_startup_seconds']:.1f} s, after the trial {p['after_trial_seconds']:.1f} s "
          f"(MLflow, summary)")
    print(f"c/a = {f['c_over_a']:.2f}   c/b = {f['c_over_b']:.2f}   "
          f"per-trial c/b (once-per-sweep set-up left out) = {f['trial_c_over_b']:.2f}")
    if "peftsweep_train_job" in f:
        c0, p0 = Timing(**f["peftsweep_train_job"]), f["peftsweep_train_job_parts"]
        print(f"(c0) as a Ray Train job: c0/a = {c0.total / a.total:.2f}   c0/b = {c0.total / b.total:.2f}; its "
              f"trial start-up {p0['trial_startup_seconds']:.1f} s against (c)'s {p['trial_startup_seconds']:.1f} s")
    if "raw_default_health_check" in f:
        d = Timing(**f["raw_default_health_check"])
        print(f"Ray Train default health-check interval: (b) total {d.total:.1f} s (start-up {d.startup:.1f}, "
              f"teardown {d.teardown:.1f}) vs {b.total:.1f} s at 0.2 s: {d.total - b.total:+.1f} s per trial")


if __name__ == "__main__":
    main()
