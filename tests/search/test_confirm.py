"""The confirm stage for real: a small sweep with `confirm.seeds: 2`, its driver SIGKILLed during the confirm stage
and resumed, then `peftsweep confirm --seeds 3` with a Train controller SIGKILLed (the run is tried again); everything
checked from MLflow, the summary recomputed from the confirm runs with scipy's t distribution."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

from scipy import stats

from peftsweep.search.tracking.client import (CONFIG_TAG, PARETO_TAG, REPEATS_TAG, ROLE_TAG, SEED_TAG, STAGE_TAG, STATUS_TAG,
                                       client_for)
from tests.search.test_faults import finish, kill_group, log_tail, start, trial_runs, wait_until, write_config
from peftsweep.trainers.faults import is_infrastructure_failure
from tests.tiny import make_csv

SEEDS = [1000, 2000]  # confirm_seeds(train.seed 0, 2)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, max(mean - half, 0.0), min(mean + half, 1.0)  # an accuracy's mean lies in [0, 1]


def processes_named(name: str, driver: subprocess.Popen) -> list[int]:
    """Ray processes of this driver's session (it was started in a session of its own) whose title has `name`."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()]
    return [int(row[0]) for row in rows if len(row) == 3 and int(row[1]) == driver.pid and name in row[2]]


def by_stage(runs: list, stage: str) -> list:
    return [r for r in runs if r.data.tags.get(STAGE_TAG) == stage]


def test_confirm_stage_survives_a_driver_kill_and_confirms_more_seeds_later(tmp_path, tiny_model):
    csv = str(make_csv(tmp_path / "data.csv", n=600))
    lora = {"r": 4, "alpha_multiple": 2, "dropout": 0.0, "targets": "attention", "lr": 3e-2}
    config = write_config(
        tmp_path, tiny_model, csv, train={"epochs": 2, "batch_size": 16},
        methods={"lora": lora, "full": {"lr": 1e-3}},
        search={"algorithm": "random", "start_points": "defaults", "num_samples": 2, "seed": 0,
                "max_concurrent_trials": 2},
        confirm={"seeds": 2, "best_per_method": True},  # every method's best: 2 configurations, 4 confirm runs
        resources={"num_workers": 1, "cpus_per_worker": 1})
    first = start(config)
    try:
        wait_until(lambda: any("val_accuracy" in r.data.metrics for r in by_stage(trial_runs(config), "confirm")),
                   first, 400, "a confirm run's first epoch")
        first.kill()  # SIGKILL during the confirm stage
        first.wait(timeout=30)
    finally:
        kill_group(first)
    before = {r.info.run_id: r for r in trial_runs(config)}
    assert len(by_stage(list(before.values()), "search")) == 2

    resumed = start(config, "--resume")
    assert finish(resumed, timeout=400) == 0, log_tail(resumed)
    runs = trial_runs(config)
    search, repeats = by_stage(runs, "search"), by_stage(runs, "confirm")
    origin = {r.data.tags["peftsweep.trial_id"]: r for r in search}
    # Exactly one run per (configuration, seed), each completed, tagged with what it repeats; none lost.
    assert sorted((r.data.tags[CONFIG_TAG], int(r.data.tags[SEED_TAG])) for r in repeats) == sorted(
        (trial_id, seed) for trial_id in origin for seed in SEEDS)
    for run in repeats:
        assert run.data.tags[STATUS_TAG] == "completed" and run.info.status == "FINISHED"
        assert run.data.tags[REPEATS_TAG] == origin[run.data.tags[CONFIG_TAG]].info.run_id
        assert run.data.params["seed"] == run.data.tags[SEED_TAG] and run.data.tags[ROLE_TAG] == "trial"
        assert run.info.run_name.endswith(f"-seed{run.data.tags[SEED_TAG]}")
    for run_id, run in before.items():
        if run.info.status == "FINISHED":  # finished before the kill: kept, not run again
            assert run_id in {r.info.run_id for r in runs}
    assert "resuming sweep 'faults' (confirm stage)" in (config.parent / "driver1.log").read_text()

    # The summary's numbers, recomputed here from the confirm runs alone.
    summary = json.loads((tmp_path / "out" / "summary" / "summary.json").read_text())
    confirmed = {c["config_id"]: c for c in summary["confirmed"]["configs"]}
    assert set(confirmed) == set(origin)
    for config_id, c in confirmed.items():
        mine = [r for r in repeats if r.data.tags[CONFIG_TAG] == config_id]
        for split in ("val", "test"):
            mean, low, high = t_interval([r.data.metrics[f"{split}_accuracy"] for r in mine])
            got = c[split]
            assert math.isclose(got["mean"], mean, abs_tol=1e-9)
            if high > low:
                assert math.isclose(got["low"], low, abs_tol=1e-9) and math.isclose(got["high"], high, abs_tol=1e-9)
        assert math.isclose(c["selection_bias"]["mean"],
                            origin[config_id].data.metrics["val_accuracy"] - c["val"]["mean"], abs_tol=1e-9)
        assert c["failures"] == "failed 0 of 2"
    full_id = next(i for i, r in origin.items() if r.data.params["method"] == "full")
    lora_id = next(i for i, r in origin.items() if r.data.params["method"] == "lora")
    assert summary["confirmed"]["reference"] == full_id
    full_test = {int(r.data.tags[SEED_TAG]): r.data.metrics["test_accuracy"] for r in repeats
                 if r.data.tags[CONFIG_TAG] == full_id}
    for config_id, c in confirmed.items():
        if config_id == full_id:
            continue
        diffs = [r.data.metrics["test_accuracy"] - full_test[int(r.data.tags[SEED_TAG])] for r in repeats
                 if r.data.tags[CONFIG_TAG] == config_id]
        assert math.isclose(c["gap_test"]["difference"]["mean"], sum(diffs) / 2, abs_tol=1e-9)
        assert c["verdict"] in ("better", "worse", "equivalent within 1 pt", "undecided: cannot tell at 95%",
                                "too few seeds")
    # MLflow: the parent says the front is confirmed; `peftsweep.pareto` marks the front of the means.
    client = client_for(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    parent = next(r for r in client.search_runs([search[0].info.experiment_id]) if r.data.tags.get(ROLE_TAG) == "sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["peftsweep.front"] == "confirmed"
    assert parent.data.metrics["confirmed_configs"] == 2 and parent.data.metrics["confirm_seeds"] == 2
    front = set(summary["confirmed"]["front"])
    assert confirmed[lora_id]["val"]["mean"] > summary["floor"]["val_accuracy"] + 0.2  # it learned: on the front
    assert front and {r.info.run_id for r in runs if r.data.tags[PARETO_TAG] == "true"} == {
        r.info.run_id for r in runs if r.data.tags[CONFIG_TAG] in front}
    assert client.get_run(origin[full_id].info.run_id).data.metrics["confirm_runs"] == 2

    # More seeds later: only the third seed's runs are trained; the first four stay as they are. The process of one of
    # them (one worker: its Tune trial's process, resources.in_process) is SIGKILLed, as by the OOM killer: that run
    # fails, is tried again with the same seed, and completes.
    log = tmp_path / "confirm.log"
    with log.open("w") as out:
        more = subprocess.Popen([sys.executable, "-m", "peftsweep.cli", "confirm", "--experiment", "faults", "--seeds",
                                 "3", "--tracking-uri", f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"], cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    more.log_path = log
    try:
        trials = wait_until(lambda: processes_named("ImplicitFunc", more), more, 300,
                            "the process of a new confirm run")
        os.kill(trials[0], signal.SIGKILL)
        assert finish(more, timeout=400) == 0, log_tail(more)
    finally:
        kill_group(more)
    printed = log.read_text()
    assert "retry  " in printed and "(same seed)" in printed
    assert "2 configurations x 3 new seeds (1000, 2000, 3000): 2 runs" in printed
    assert "Confirmed over 3 new seeds" in printed
    after = by_stage(trial_runs(config), "confirm")
    assert len(after) == 6 and {r.info.run_id for r in repeats} <= {r.info.run_id for r in after}
    retried = [r for r in after if "peftsweep.retried" in r.data.tags]
    assert len(retried) == 1 and retried[0].data.tags[STATUS_TAG] == "completed", [r.data.tags for r in after]
    assert int(retried[0].data.tags[SEED_TAG]) == 3000
    assert is_infrastructure_failure(retried[0].data.tags["peftsweep.retried"]), retried[0].data.tags
    assert sorted(int(r.data.tags[SEED_TAG]) for r in after if r.info.run_id not in {x.info.run_id for x in repeats}) \
        == [3000, 3000]
    summary = json.loads((tmp_path / "out" / "summary" / "summary.json").read_text())
    assert summary["confirmed"]["seeds"] == [1000, 2000, 3000]
    assert all(c["val"]["n"] == 3 and c["failures"] == "failed 0 of 3" for c in summary["confirmed"]["configs"])

    # `make docs-img` reads the front's view of such a store (the demo confirms): its confirm runs are charted too
    from tests.dashboards.mlflow_page import expected_points

    charted = {name for name, _, _ in expected_points(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}", "faults")}
    assert {r.info.run_name for r in trial_runs(config) if r.data.tags[PARETO_TAG] == "true"} == charted
    assert any(name.endswith("-seed3000") for name in charted)


def test_confirm_command_refuses_what_it_cannot_do(tmp_path, capsys):
    from peftsweep.cli import main

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["confirm", "--experiment", "nope", "--seeds", "0", "--tracking-uri", store]) == 2
    assert "--seeds: at least 1" in capsys.readouterr().err
    assert main(["confirm", "--experiment", "nope", "--seeds", "2", "--tracking-uri", store]) == 2
    assert "--experiment: no experiment 'nope'" in capsys.readouterr().err
    client = client_for(store)  # a sweep from before sweeps logged their config
    experiment = client.create_experiment("old")
    client.create_run(experiment, tags={ROLE_TAG: "sweep"})
    assert main(["confirm", "--experiment", "old", "--seeds", "2", "--tracking-uri", store]) == 2
    assert "did not log its config" in capsys.readouterr().err


def test_confirm_command_passes_its_options_on(monkeypatch, tmp_path):
    """--best-per-method and --address reach the confirm pass (what they select is tested in test_confirmation.py)."""
    from peftsweep import cli
    from peftsweep.search.orchestration import sweep

    seen = {}

    def fake(uri, experiment, seeds, address=None, best_per_method=None):
        seen.update(uri=uri, experiment=experiment, seeds=seeds, address=address, best=best_per_method)
        raise cli.UserError("stop here")

    monkeypatch.setattr(sweep, "confirm_sweep", fake)
    store = f"sqlite:///{tmp_path / 'm.db'}"
    argv = ["confirm", "--experiment", "e", "--seeds", "4", "--tracking-uri", store, "--address", "10.0.0.1:6379"]
    assert cli.main(argv + ["--best-per-method"]) == 2
    assert seen == {"uri": store, "experiment": "e", "seeds": 4, "address": "10.0.0.1:6379", "best": True}
    assert cli.main(argv) == 2 and seen["best"] is None  # then the sweep's own confirm.best_per_method decides


def test_confirm_seeds_auto_adds_seeds_to_the_undecided_until_decided_or_the_budget(monkeypatch, tmp_path, capsys):
    """`confirm.seeds: auto` as the sweep drives it (search.orchestration.sweep.Sweep.confirm), each pass's runs made up:
    3 seeds for all; the undecided comparison and its reference get 5, 7, then 9, where it is decided (at alpha / 5:
    max_seeds 11 plans 5 looks) and the stage ends before its budget. A second time, never decided: it stops at
    max_seeds."""
    from types import SimpleNamespace

    from peftsweep.search.orchestration import sweep
    from peftsweep.search.config import SweepConfig
    from peftsweep.search.results.records import TrialRecord
    from peftsweep.search.results.summary import summarize
    from peftsweep.search.orchestration.resume import SweepState

    def run(config_id: str, method: str, seed: int, test: float) -> TrialRecord:
        return TrialRecord(f"{config_id}-{seed}", f"{config_id}-{seed}", method, "completed", {}, val_accuracy=test,
                           test_accuracy=test, trainable_pct=1.0 if method == "lora" else 100.0, stage="confirm",
                           config_id=config_id, seed=seed)

    search = [TrialRecord("run-l", "l", "lora", "completed", {}, 0.9, 0.9, 1.0, 10),
              TrialRecord("run-f", "f", "full", "completed", {}, 0.85, 0.85, 100.0, 1000)]

    def scenario(gaps: list[float], max_seeds: int) -> tuple[list, str]:
        runs: list[TrialRecord] = []
        passes = []

        def fake_pass(self, best_per_method=None, only=None):
            passes.append((self.state.confirm_seeds, sorted(only) if only else None))
            for i in range(self.state.confirm_seeds):
                seed = 1000 * (i + 1)
                for config_id, method, acc in (("f", "full", 0.80), ("l", "lora", 0.80 + gaps[i])):
                    if (only is None or config_id in only) and not any(r.run_id == f"{config_id}-{seed}" for r in runs):
                        runs.append(run(config_id, method, seed, acc))
            return "finished"

        monkeypatch.setattr(sweep.Sweep, "confirm_pass", fake_pass)
        monkeypatch.setattr(sweep.Sweep, "summarize", lambda self: summarize(search + runs, rules=config.confirm.rules()))
        monkeypatch.setattr(sweep, "write_state", lambda *a: None)
        config = SweepConfig.model_validate({"name": "x", "model": "m", "data": {"train_file": "t.csv"},
                                             "output_dir": str(tmp_path),
                                             "confirm": {"seeds": "auto", "max_seeds": max_seeds}})
        state = SweepState("parent", "exp", "sqlite:///x.db", str(tmp_path / "tune"), {}, confirm_seeds=3)
        status = sweep.Sweep(SimpleNamespace(config=config), state, None, None, None).confirm()
        assert status == "finished"
        return passes, capsys.readouterr().out

    # noisy around +0.02, then steady +0.03: p 0.13 at 5 seeds, 0.024 at 7 (x 5 looks: undecided), 0.0035 at 9: better
    passes, out = scenario([0.04, 0.0, 0.03, -0.01, 0.05, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03], max_seeds=11)
    assert passes == [(3, None), (5, ["f", "l"]), (7, ["f", "l"]), (9, ["f", "l"])]
    assert "1 verdict undecided at 3 seeds: 5 seeds for 2 configurations" in out
    assert "1 verdict undecided at 7 seeds: 9 seeds" in out and "at 9 seeds" not in out
    # never decided: no gap at all, with spread; stops at max_seeds (3, 5, then 6)
    passes, out = scenario([0.02, -0.02, 0.01, -0.01, 0.0, 0.02], max_seeds=6)
    assert [p[0] for p in passes] == [3, 5, 6]
