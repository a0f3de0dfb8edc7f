"""The private Ray API that search/ray_private.py uses is where it expects it; if a Ray upgrade moved it, this
fails naming the Ray version (the one tested is requirements-lock.txt's pin)."""

from __future__ import annotations

from pathlib import Path

import ray

from peftsweep.search import ray_private

ROOT = Path(__file__).resolve().parents[2]


def test_the_private_ray_api_used_is_where_it_was():
    problems = ray_private.api_problems()
    assert not problems, (f"ray {ray.__version__} (tested: {ray_private.TESTED_RAY}) moved what "
                          f"search/ray_private.py uses: {problems}")


def test_the_tested_ray_is_the_locked_one():
    locked = [line.split("==")[1].strip() for line in (ROOT / "requirements-lock.txt").read_text().splitlines()
              if line.startswith("ray==")]
    assert locked == [ray_private.TESTED_RAY], (locked, ray_private.TESTED_RAY)
    assert ray.__version__ == ray_private.TESTED_RAY, f"installed ray {ray.__version__}, tested {locked}"


def test_only_the_adapter_imports_private_ray_modules():
    private = ("ray.train.v2._internal", "ray._private", "ray.core.generated")
    users = sorted(str(p.relative_to(ROOT)) for folder in ("search", "trainers", "spaces", "dashboards", "peftsweep")
                   for p in (ROOT / folder).rglob("*.py") if any(name in p.read_text() for name in private))
    assert users == ["search/ray_private.py"], users
