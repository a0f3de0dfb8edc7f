"""Installing peftsweep adds one top-level package, `peftsweep`: the design card's folders live inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_top_level_package_that_works_from_anywhere(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("peftsweep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"peftsweep"}
    for part in ("spaces/lora.py", "trainers/recipe.py", "search/orchestration/sweep.py", "dashboards/report.py"):
        assert f"peftsweep/{part}" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import peftsweep, peftsweep.search.orchestration.sweep, peftsweep.spaces as s; "
             "assert peftsweep.__file__.startswith(%r), peftsweep.__file__; print(len(s.REGISTRY))\n"
             "try:\n    import spaces\nexcept ImportError:\n    print('no top-level spaces')\n" % str(target))
    env = os.environ | {"PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "no top-level spaces"
