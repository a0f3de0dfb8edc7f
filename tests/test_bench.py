"""Each benchmark script runs end to end in its --quick mode (tiny model, few trials). No timing is asserted: the
figures come from the full runs, quoted in the README's Performance section."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


BENCH_TIMEOUT_S = 600


def run(script: str, *args: str, quick: bool = True) -> str:
    """Run a benchmark script to its end, within BENCH_TIMEOUT_S; a script that does not end fails with what it was
    doing (its last progress lines), not with a bare timeout."""
    command = [sys.executable, str(BENCH / script), *(["--quick"] if quick else []), *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(f"{script} {' '.join(args)} did not finish within {BENCH_TIMEOUT_S} s; its last "
                             f"lines:\n{out[-2000:]}\n--- stderr ---\n{err[-2000:]}") from None
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_overhead_quick(tmp_path):
    """One worker: (c) trains in its trial's process, (c0) is the same sweep as a Ray Train job; the breakdown of
    each names the parts its path went through."""
    out = run("overhead.py", "--workers", "1", "--breakdown", "--no-group-by-length", "--json", str(tmp_path / "o.json"))
    figures = json.loads((tmp_path / "o.json").read_text())
    assert "c/a =" in out and "c/b =" in out and "(c0) as a Ray Train job" in out
    assert figures["setup"]["workers"] == 1 and figures["setup"]["group_by_length"] is False
    for way in ("bare", "raw_ray_train", "raw_lean", "peftsweep", "peftsweep_train_job"):
        assert figures[way]["training"] > 0 and figures[way]["startup"] > 0
    in_process = {row["ends_at"] for row in figures["breakdown"]}
    train_job = {row["ends_at"] for row in figures["breakdown_train_job"]}
    assert {"trial_logged", "model_ready", "first_step"} <= in_process & train_job
    assert "controller_started" in train_job and "controller_started" not in in_process
    assert figures["recipe_import_seconds"] > 0


def test_padding_quick(tmp_path):
    run("padding.py", "--seeds", "2", "--json", str(tmp_path / "p.json"))
    figures = json.loads((tmp_path / "p.json").read_text())
    rows = figures["rows"]
    assert len(figures["runs"]["grouped"]) == len(figures["runs"]["shuffled"]) == 2
    assert figures["accuracy_difference"]["n"] == 2
    assert rows["grouped"]["train_padded_share"] < rows["shuffled"]["train_padded_share"]
    assert rows["grouped"]["step_seconds"] > 0 and rows["shuffled"]["eval_seconds"] > 0


def test_scoring_quick(tmp_path):
    run("scoring.py", "--quick", "--json", str(tmp_path / "s.json"))
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert list(rows) == ["match", "choice", "choice, rows", "choice, per byte"]
    # the two ways of choice scoring give the same answers; each way took its time
    assert (rows["choice"]["validation"], rows["choice"]["test"]) == (rows["choice, rows"]["validation"],
                                                                      rows["choice, rows"]["test"])
    assert all(0 <= r["validation"] <= 1 and r["seconds"] > 0 for r in rows.values())


def test_throughput_quick(tmp_path):
    # 1 trial of the 2-worker layout: the script runs (the other layout is the same code with other settings)
    run("throughput.py", "--trials", "1", "--layout", "1 trial x 2 workers", "--json", str(tmp_path / "t.json"))
    rows = json.loads((tmp_path / "t.json").read_text())
    assert list(rows) == ["1 trial x 2 workers"]
    assert all(r["completed"] == 1 and 0 < r["cpu_busy"] <= 1 for r in rows.values())


def test_roofline_quick(tmp_path):
    run("roofline.py", "--json", str(tmp_path / "r.json"))
    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["peak_gflops"]["float32"] > 0 and 0 < figures["fraction_of_fp32_peak_wall"] < 1


def test_searchers_quick(tmp_path):
    out = run("searchers.py", "--out", str(tmp_path))
    report = json.loads((tmp_path / "search.json").read_text())
    for png in ("search_hypervolume.png", "search_compute.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    assert {"tpe", "nsga2", "random", "tpe, start at defaults", "random, no start points"} <= set(report["summary"])
    # with the whole grid as budget a searcher's hypervolume can reach, never exceed, the grid's
    grid_hv, grid_seconds = report["grid_hypervolume"], report["grid_worker_seconds"]
    assert 0 < report["floor"] < 1 and report["start_points"] >= 1  # hypervolumes are measured from the grid's floor
    assert all(c[-1] <= grid_hv + 1e-9 for runs in report["curves"].values() for c in runs)
    assert "trials to 95%" in out and "95% reached at" in out
    # the table: per-epoch accuracies and a spend that grows with every epoch, up to the trial's worker-seconds
    for row in report["grid"]:
        assert len(row["history"]) == len(row["seconds"]) == 2 and row["history"][-1] == row["accuracy"]
        assert 0 < row["seconds"][0] < row["seconds"][1]
    assert math.isclose(grid_seconds, sum(row["seconds"][-1] for row in report["grid"]))
    compute = report["compute_curves"]
    assert {"TPE, no early stopping", "TPE + ASHA on accuracy", "TPE + Pareto ASHA", "random + Pareto ASHA",
            "grid (the reference)"} == set(compute) == set(report["compute_summary"])
    for runs in compute.values():
        for curve in runs:
            spent = [s for s, _ in curve]
            assert spent == sorted(spent) and all(hv <= grid_hv + 1e-9 for _, hv in curve)
    # the grid run in its own order ends at its own hypervolume, having spent its own worker-seconds
    assert math.isclose(compute["grid (the reference)"][0][-1][0], grid_seconds)
    assert math.isclose(compute["grid (the reference)"][0][-1][1], grid_hv)
    assert set(report["warm_start"]) == {"warm", "cold"}
    assert report["compute_summary"]["TPE + Pareto ASHA"]["start_points_compute_share"] is not None


def test_gpu_sweep_dry_run_times_each_method_plain_and_in_ray_train(tmp_path):
    """The MFU half of bench/gpu_sweep.py on a CPU at toy sizes (its sweep half is the same code path as the shared
    sweep's, tests/search/test_sweep.py); `--dry-run` is what docs/gpus.md tells to run before spending GPU time."""
    out = run("gpu_sweep.py", "--dry-run", "--skip-sweep", "--out", str(tmp_path), quick=False)
    assert "PASS" in out
    rows = json.loads((tmp_path / "gpu_sweep.json").read_text())["mfu"]["rows"]
    assert set(rows) == {"full", "lora"}  # bench/workloads.yaml's gpu_mfu
    for row in rows.values():
        for where in ("plain", "ray_train"):
            assert row[where]["step_seconds"] > 0 and row[where]["flops_per_step"] > 0
        assert row["ray_over_plain"] > 0 and 0 < row["mfu_plain"] < 1
