"""Trials that end other than by finishing: stopped by ASHA, cut by the time budget, interrupted by Ctrl-C, after a
driver kill and --resume. Each time the trial's Ray Train job must end with it and give its CPUs back, the sweep must
go on to its next trial, and MLflow must say what happened.

ASHA is made deterministic with learning rates: 1e-6 cannot learn the toy task in an epoch, 3e-2 learns it; a trial
that cannot learn and reaches a rung after one that can is below the rung's cutoff and is stopped.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import ray
import yaml

from peftsweep.search.config import load_sweep_config
from peftsweep.search.plan import build_plan
from peftsweep.search.orchestration.resume import read_state
from peftsweep.search.orchestration.sweep import run_sweep
from peftsweep.search.tracking.client import FAILURE_TAG, PARETO_TAG, ROLE_TAG, STATUS_TAG, client_for
from tests.search.test_faults import (check_checkpoints_kept_for_the_front_only, finish, history, kill_group, log_tail,
                                      nan_beyond_position, ray_train_workers, start, trial_runs, wait_until)
from tests.tiny import make_csv, make_model_dir

BAD, GOOD = 1e-6, 3e-2
EPOCHS = 3
# A hung sweep never returns; a working one here takes about a minute on 2 cores.
HANG_BOUND_S = 300


def write_config(directory: Path, model: str, csv: str, **sections) -> Path:
    config = {"name": "faults", "model": model, "output_dir": str(directory / "out"),
              "data": {"train_file": csv, "max_length": 16},
              "train": {"epochs": EPOCHS, "batch_size": 16},
              # accuracy-only ASHA, whose decisions these tests make deterministic (tests/search/test_pareto_asha.py
              # and test_pareto_early_stopping for the default, pareto)
              "early_stopping": {"enabled": True, "grace_period": 1, "reduction_factor": 2,
                                 "objective": "accuracy"}} | sections
    path = directory / "faults.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # methods in the order given: their start points run so
    return path


def first_trials(methods: list[tuple[str, float]], **search) -> dict:
    """The sweep's first trials, in this order: each method at its defaults and this (fixed) learning rate (a grid
    would be ordered too, but is not searched with early stopping); then random ones among these."""
    fixed = {"lora": {"r": 4, "alpha_multiple": 2, "dropout": 0.0, "targets": "attention"},
             "prompt": {"num_virtual_tokens": 4}}
    return {"methods": {name: fixed.get(name, {}) | {"lr": lr} for name, lr in methods},
            "search": {"algorithm": "random", "start_points": "defaults", "num_samples": len(methods), "seed": 0}
            | search}


def run_in_thread(config: Path, **kwargs):
    """run_sweep with a bound: a sweep that hangs fails the test instead of hanging it."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = run_sweep(build_plan(load_sweep_config(config)), **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(HANG_BOUND_S)
    if thread.is_alive():
        raise SweepHung(f"the sweep did not end within {HANG_BOUND_S} s; where it waits:\n{stacks()}\n"
                        f"Ray resources available {ray.available_resources()} of {ray.cluster_resources()}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"], time.monotonic() - started


class SweepHung(AssertionError):
    pass


def stacks() -> str:
    """Every thread's Python stack, to say where a hung sweep waits."""
    import sys
    import traceback

    return "\n".join(f"--- thread {ident}\n{''.join(traceback.format_stack(frame)[-8:])}"
                     for ident, frame in sys._current_frames().items())


def run_on_local_ray(config: Path):
    """The sweep on a 2-CPU Ray of this process, bounded; afterwards nothing of it may still hold a CPU."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        outcome = run_in_thread(config)
        assert_everything_released()
    except SweepHung:
        # The sweep's thread still runs in this process: shutting Ray down under it can abort the whole test run.
        # Ray stays up; the next test that starts its own Ray in this process then fails visibly instead.
        raise
    except BaseException:
        ray.shutdown()
        raise
    ray.shutdown()
    return outcome


def assert_everything_released() -> None:
    """No Ray Train worker left, no CPU left reserved (a leaked placement group keeps its CPUs)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not ray_train_workers() and ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"left behind: Train workers {ray_train_workers()}, CPUs available "
                         f"{ray.available_resources().get('CPU', 0)} of {ray.cluster_resources()['CPU']}")


def max_overlap(spans: list[tuple[int, int]]) -> int:
    """The most (start, end) spans open at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    open_now = most = 0
    for _, change in events:
        open_now += change
        most = max(most, open_now)
    return most


def runs_by_status(config: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in trial_runs(config):
        out.setdefault(run.data.tags.get(STATUS_TAG, "?"), []).append(run)
    return out


def test_asha_stops_trials_a_trial_fails_their_jobs_end_and_every_trial_runs(tmp_path, capfd):
    """Two trials at a time, one worker each, trial actors reused. LoRA learns and ia3 cannot, racing to the first rung;
    prompt tuning fails (NaN loss) while they run; the adapter, which cannot learn, reaches the first rung after LoRA
    and is stopped. Whatever the race, every trial runs and nothing is left running."""
    model = tmp_path / "model"
    make_model_dir(model)
    nan_beyond_position(model, 12)  # positions >= 12 are NaN: prompt tuning's virtual tokens reach them, no one else
    csv = str(make_csv(tmp_path / "data.csv", n=600))
    config = write_config(tmp_path, str(model), csv,
                          **first_trials([("lora", GOOD), ("ia3", BAD), ("prompt", BAD), ("adapter", BAD)],
                                         max_concurrent_trials=2),
                          resources={"num_workers": 1, "cpus_per_worker": 1})
    outcome, seconds = run_on_local_ray(config)
    runs = {r.data.params["method"]: r for r in trial_runs(config)}
    assert sorted(runs) == ["adapter", "ia3", "lora", "prompt"]  # none lost to a failed actor reuse
    # one worker each: trained in the trials' own processes, which Tune reused (resources.in_process)
    assert {r.data.tags.get("peftsweep.trains_in") for r in runs.values() if "val_accuracy" in r.data.metrics} == {
        "trial process"}
    # search.max_concurrent_trials: 2 at a time (2 CPUs, 1 worker each), never more
    assert max_overlap([(r.info.start_time, r.info.end_time) for r in runs.values()]) == 2
    assert runs["lora"].data.tags[STATUS_TAG] == "completed"
    assert runs["prompt"].data.tags[STATUS_TAG] == "failed" and runs["prompt"].info.status == "FAILED"
    assert "loss is nan" in runs["prompt"].data.tags[FAILURE_TAG]
    assert runs["adapter"].data.tags[STATUS_TAG] == "early_stopped"
    assert runs["ia3"].data.tags[STATUS_TAG] in ("completed", "early_stopped")  # it may reach the rung first
    stopped = [r for r in runs.values() if r.data.tags[STATUS_TAG] == "early_stopped"]
    for run in stopped:
        assert float(run.data.params["lr"]) == BAD
        epochs = int(run.data.metrics["epochs_completed"])
        assert 1 <= epochs < EPOCHS and history(config, run.info.run_id) == list(range(1, epochs + 1))
        assert run.data.tags[PARETO_TAG] == "false" and run.info.status == "FINISHED"
    for run in runs.values():
        if run.data.tags[STATUS_TAG] == "completed":
            assert history(config, run.info.run_id) == list(range(1, EPOCHS + 1))
    assert outcome.summary.counts["early_stopped"] == len(stopped)
    assert outcome.summary.front and all(r.status == "completed" for r in outcome.summary.front)
    assert read_state(tmp_path / "out").status == "finished"
    captured = capfd.readouterr()
    out = captured.out
    assert "Could not re-use actor" not in out + captured.err  # Tune's warning goes to stderr
    assert out.count("stopped early") == len(stopped) and f"at epoch 1/{EPOCHS}" in out


def test_pareto_early_stopping_keeps_the_full_fine_tune_and_stops_the_dominated_one(tmp_path, tiny_model):
    """The default objective, one trial at a time. LoRA learns. Prompt tuning learns too and is far cheaper: on the
    first front, kept if it beats the floor (ranked last at its rung if it does not). The adapter cannot learn (its
    rate is too small) and costs more than LoRA: dominated, stopped at the first rung, its job ended. Full fine-tuning
    cannot learn either and is the costliest: the rung alone would stop it, but it is the sweep's only reference and
    none has finished, so it runs to the end and the sweep has its comparison."""
    csv = str(make_csv(tmp_path / "data.csv", n=600))
    config = write_config(tmp_path, tiny_model, csv,
                          **first_trials([("lora", GOOD), ("prompt", GOOD), ("adapter", BAD), ("full", BAD)]),
                          train={"epochs": 2, "batch_size": 16},
                          early_stopping={"enabled": True, "grace_period": 1, "reduction_factor": 2,
                                          "objective": "pareto"},
                          resources={"num_workers": 1, "cpus_per_worker": 1})
    outcome, _ = run_on_local_ray(config)
    runs = {r.data.params["method"]: r for r in trial_runs(config)}
    metrics = {m: r.data.metrics for m, r in runs.items()}
    client = client_for(f"sqlite:///{config.parent / 'out' / 'mlflow.db'}")
    first = {m: next(x.value for x in client.get_metric_history(r.info.run_id, "val_accuracy") if x.step == 1)
             for m, r in runs.items()}  # validation accuracy at the rung (epoch 1)
    floor = outcome.summary.floor.val_accuracy
    assert metrics["prompt"]["trainable_pct"] < metrics["lora"]["trainable_pct"] < metrics["adapter"]["trainable_pct"]
    assert first["lora"] > floor and first["adapter"] < first["lora"] and first["full"] < first["lora"]
    assert runs["lora"].data.tags[STATUS_TAG] == "completed"
    assert runs["adapter"].data.tags[STATUS_TAG] == "early_stopped" and metrics["adapter"]["epochs_completed"] == 1
    assert runs["adapter"].data.tags[PARETO_TAG] == "false"
    # the reference: dominated at its rung (worse than LoRA, costlier than all), kept as the last full fine-tune
    assert runs["full"].data.tags[STATUS_TAG] == "completed" and metrics["full"]["epochs_completed"] == 2
    assert outcome.summary.reference is not None and outcome.summary.reference.method == "full"
    # prompt tuning: the cheap end of the first front when it beats the floor; ranked last when it does not
    expected = "completed" if first["prompt"] > floor else "early_stopped"
    assert runs["prompt"].data.tags[STATUS_TAG] == expected, (first, floor)
    assert outcome.summary.counts["early_stopped"] == 1 + (expected == "early_stopped")


def test_sigkilled_driver_resumes_without_losing_or_repeating_trials_and_asha_goes_on(tmp_path, tiny_model):
    """One trial at a time, one worker each; ia3 (cannot learn), LoRA (learns), prompt (cannot learn). The driver is
    SIGKILLed while LoRA runs, after ia3 finished. The resumed sweep runs nothing twice, continues LoRA from its
    checkpoint in its own run (its replayed epochs are what ASHA's rungs hold after a resume) and stops prompt.
    The kill comes once Tune has saved that ia3 ended (it saves its state about once a second: a driver killed within
    that second of a trial's end would run the trial again); the data is large enough for LoRA, trained in its trial's
    process, to be still running then."""
    csv = str(make_csv(tmp_path / "data.csv", n=2400))
    config = write_config(tmp_path, tiny_model, csv, **first_trials([("ia3", BAD), ("lora", GOOD), ("prompt", BAD)]),
                          train={"epochs": EPOCHS, "batch_size": 16, "checkpoints_to_keep": 2},
                          delete_dominated_checkpoints=True, resources={"num_workers": 1, "cpus_per_worker": 1})
    first = start(config)
    try:
        wait_until(lambda: any(r.data.params.get("method") == "lora" and "val_accuracy" in r.data.metrics
                               for r in trial_runs(config)) and "TERMINATED" in tune_saved_statuses(config),
                   first, 240, "LoRA's first epoch, after Tune saved that ia3 ended")
        first.kill()  # SIGKILL: nothing of the driver's runs; Ray, in its process group, goes below
        first.wait(timeout=30)
    finally:
        kill_group(first)  # what a user's `ray stop` would do: the dead driver's local Ray goes too
    before = {r.info.run_id: r for r in trial_runs(config)}
    assert sorted(r.info.status for r in before.values()) == ["FINISHED", "RUNNING"]

    resumed = start(config, "--resume")
    started = time.monotonic()
    try:
        assert finish(resumed, timeout=HANG_BOUND_S) == 0, log_tail(resumed)
    finally:
        kill_group(resumed)
    assert time.monotonic() - started < HANG_BOUND_S
    after = trial_runs(config)
    runs = {r.data.params["method"]: r for r in after}
    # exactly num_samples runs, one per trial; the searcher kept its state (no start point was proposed again)
    assert len(after) == 3 and sorted(runs) == ["ia3", "lora", "prompt"]
    assert len({r.data.tags["peftsweep.trial_id"] for r in after}) == 3
    for run_id, run in before.items():
        assert run_id in {r.info.run_id for r in after}  # continued in its own run, never a second one
        if run.info.status == "FINISHED":  # not run again: same run, same start and end
            assert run.data.params["method"] == "ia3"
            assert runs["ia3"].info.start_time == run.info.start_time and runs["ia3"].info.end_time == run.info.end_time
    for method in ("ia3", "lora"):  # alone at its rungs, the first one continues however bad it is
        assert runs[method].info.status == "FINISHED" and runs[method].data.tags[STATUS_TAG] == "completed"
        assert history(config, runs[method].info.run_id) == list(range(1, EPOCHS + 1))
    assert runs["lora"].data.metrics["restarts"] >= 1  # continued from its checkpoint
    stopped = runs["prompt"]
    assert stopped.data.tags[STATUS_TAG] == "early_stopped" and stopped.data.metrics["epochs_completed"] == 1
    assert stopped.data.tags[PARETO_TAG] == "false"
    check_checkpoints_kept_for_the_front_only(config, after)
    client = client_for(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    parents = [r for r in client.search_runs([stopped.info.experiment_id]) if r.data.tags.get(ROLE_TAG) == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    log = (config.parent / "driver1.log").read_text()
    assert "stopped early" in log and "Could not re-use actor" not in log
    assert not ray_train_workers(first, resumed)


def tune_saved_statuses(config: Path) -> list[str]:
    """The trial statuses in the newest Tune experiment state saved to the sweep's storage."""
    import json

    saved = sorted((config.parent / "out" / "ray").glob("*/experiment_state-*.json"))
    if not saved:
        return []
    try:
        state = json.loads(saved[-1].read_text())
    except ValueError:  # being written
        return []
    return [json.loads(trial[0]).get("status") for trial in state["trial_data"]]


def test_time_budget_ends_the_running_trial_and_its_job(tmp_path, tiny_model):
    """A trial that would train for long is cut by the budget: stopped early, its job ended, the sweep finished. Its
    one worker is a Ray Train job (`resources.in_process: false`); the other tests here train in the trial's process.
    The budget leaves room for the job's start and a first epoch on a loaded machine (25 s did not, in CI)."""
    csv = str(make_csv(tmp_path / "data.csv", n=300))
    config = write_config(tmp_path, tiny_model, csv, methods={"ia3": {}},
                          train={"epochs": 1000, "batch_size": 16}, early_stopping={"enabled": False},
                          search={"algorithm": "random", "num_samples": 2, "start_points": "none",
                                  "time_budget_s": 45},
                          resources={"num_workers": 1, "cpus_per_worker": 1, "in_process": False})
    outcome, seconds = run_on_local_ray(config)
    # 1000 epochs take far longer than this (several s each beside another test file): the budget ended the trial,
    # with room for a loaded machine (it once needed more than 85 s)
    assert seconds < 45 + 240
    (run,) = trial_runs(config)  # the second trial never started
    assert run.data.tags[STATUS_TAG] == "early_stopped" and run.info.status == "FINISHED"
    assert run.data.metrics.get("epochs_completed", 0) < 1000
    assert run.data.tags["peftsweep.trains_in"] == "ray train job"
    assert outcome.summary.counts == {"completed": 0, "early_stopped": 1, "failed": 0, "interrupted": 0,
                                      "running": 0, "not_run": 0, "total": 1}
    assert read_state(tmp_path / "out").status == "finished"


DOWN_S = 5


def test_ctrl_c_ends_the_jobs_and_resume_continues_the_trial(tmp_path, tiny_model):
    # 2,400 rows: epochs long enough that the Ctrl-C lands before the trial's last epoch (with 600 the first driver
    # sometimes logged all of them first, and the resumed driver had nothing left to train)
    csv = str(make_csv(tmp_path / "data.csv", n=2400))
    config = write_config(tmp_path, tiny_model, csv, methods={"ia3": {}}, early_stopping={"enabled": False},
                          search={"algorithm": "random", "num_samples": 1, "start_points": "none"},
                          resources={"num_workers": 1, "cpus_per_worker": 1})
    first = start(config)
    try:
        wait_until(lambda: any("val_accuracy" in r.data.metrics for r in trial_runs(config)), first, 240,
                   "the first epoch")
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=90) == 130  # interrupted
        (interrupted,) = trial_runs(config)
        assert interrupted.info.status == "KILLED" and interrupted.data.tags[STATUS_TAG] == "interrupted"
        log = (config.parent / "driver0.log").read_text()
        assert "interrupted: stopped 1 running trials" in log, log[-3000:]
        assert "--resume" in log and not ray_train_workers(first)
        assert read_state(tmp_path / "out").status == "running"
        # stopped before its last epoch: the resume below has an epoch to train (else this test tests nothing)
        assert history(config, interrupted.info.run_id)[-1] < EPOCHS
    finally:
        kill_group(first)
    time.sleep(DOWN_S)  # the sweep is down: none of this is the trial's time
    resumed = start(config, "--resume")
    assert finish(resumed, timeout=HANG_BOUND_S) == 0, log_tail(resumed)
    (run,) = trial_runs(config)
    assert run.info.run_id == interrupted.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags[STATUS_TAG] == "completed" and run.data.metrics["restarts"] >= 1
    # worker_seconds count the time the trial's job ran: both drivers' parts, never the downtime between them
    span = run.info.end_time / 1000 - run.info.start_time / 1000
    before = interrupted.data.metrics["wall_seconds"]  # what the first driver had logged by its last epoch
    m = run.data.metrics
    assert m["worker_seconds"] == m["wall_seconds"] > before > 0
    assert m["wall_seconds"] <= span - DOWN_S
    assert history(config, run.info.run_id) == list(range(1, EPOCHS + 1))
    client = client_for(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    parents = [r for r in client.search_runs([run.info.experiment_id]) if r.data.tags.get(ROLE_TAG) == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_the_time_budget_counts_what_a_resumed_sweep_spent_before():
    """Tune saves the stopper's state with the sweep's (get_state/set_state) and restores it on --resume."""
    import pickle

    from peftsweep.search.orchestration.train_jobs import EARLY_END, EndTrainJobs

    first = EndTrainJobs("budget", time_budget_s=100)
    first.setup()
    first.spent_before = 90.0
    resumed = pickle.loads(pickle.dumps(first))  # as Tune restores it: its clock starts again
    assert resumed.started is None
    resumed.set_state(first.get_state())
    resumed.setup()
    EARLY_END.reset()
    try:
        assert 90.0 <= resumed.spent() < 95.0 and not resumed.stop_all()
        resumed.spent_before = 100.0
        assert resumed.stop_all() and EARLY_END.reason == "time budget"
    finally:
        EARLY_END.reset()
