"""Each benchmark script runs end to end in its --quick mode (tiny model, few trials). No timing is asserted: the
figures come from the full runs, quoted in the README's Performance section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_overhead_quick(tmp_path):
    out = run("overhead.py", "--json", str(tmp_path / "o.json"))
    figures = json.loads((tmp_path / "o.json").read_text())
    assert "c/a =" in out and "c/b =" in out
    for way in ("bare", "raw_ray_train", "peftsweep"):
        assert figures[way]["training"] > 0 and figures[way]["startup"] > 0


def test_throughput_quick(tmp_path):
    run("throughput.py", "--trials", "1", "--json", str(tmp_path / "t.json"))  # 1 trial per layout: it runs
    rows = json.loads((tmp_path / "t.json").read_text())
    assert len(rows) == 2 and all(r["completed"] == 1 and 0 < r["cpu_busy"] <= 1 for r in rows.values())


def test_roofline_quick(tmp_path):
    run("roofline.py", "--json", str(tmp_path / "r.json"))
    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["peak_gflops"]["float32"] > 0 and 0 < figures["fraction_of_fp32_peak_wall"] < 1


def test_searchers_quick(tmp_path):
    out = run("searchers.py", "--out", str(tmp_path))
    report = json.loads((tmp_path / "search.json").read_text())
    assert (tmp_path / "search_hypervolume.png").stat().st_size > 10_000
    assert {"tpe", "nsga2", "random", "tpe, start at defaults", "random, no start points"} <= set(report["summary"])
    # with the whole grid as budget a searcher's hypervolume can reach, never exceed, the grid's
    assert all(c[-1] <= report["grid_hypervolume"] + 1e-9 for runs in report["curves"].values() for c in runs)
    assert "trials to 95%" in out

