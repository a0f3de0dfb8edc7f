"""The KubeRay manifest stays in step with the code: its entrypoint names a real preset and valid config keys."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from peftsweep.search.config import load_sweep_config
from peftsweep.cli import parse_assignments

REPO = Path(__file__).resolve().parents[1]


def test_rayjob_entrypoint_is_a_valid_peftsweep_run():
    job = yaml.safe_load((REPO / "deploy" / "kuberay-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["peftsweep", "run"]
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    config = load_sweep_config(REPO / words[2], parse_assignments(sets, "--set"))  # unknown keys would raise here
    assert config.storage.startswith("s3://") and config.tracking.uri.startswith("http://")
    cluster = job["spec"]["rayClusterSpec"]
    images = {c["image"] for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert len(images) == 1  # one image everywhere: the same code on every node
