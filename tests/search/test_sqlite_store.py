"""A new SQLite store opened by several processes at once (a sweep's driver starting while `peftsweep ui` or
`summary` opens the same store, or two sweeps sharing one `tracking.uri`): MLflow creates the tables in each, and
without peftsweep's lock one of them failed with "table ... already exists" (seen in CI: a test polling the store
as the sweep started it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPENERS = 4

OPEN = """
import sys, time
from pathlib import Path
from peftsweep.search.tracking.client import client_for
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # imported: ready
while not go.exists():
    time.sleep(0.005)
client_for(sys.argv[1]).search_experiments()
"""


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, uri, str(go), str(tmp_path / f"ready{i}")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(OPENERS)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready*"))) < OPENERS and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all at once, each with MLflow already imported
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * OPENERS, "\n".join(o[-2000:] for o in outputs)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["mlflow.db"]  # no lock file left beside it
