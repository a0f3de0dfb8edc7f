"""The reference pages generated from the code are the ones in the repository, and the README stays a front door."""

from __future__ import annotations

from pathlib import Path

from peftsweep.metric_names import METRICS
from peftsweep.reference import PAGES
from peftsweep.spaces import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_generated_reference_pages_are_in_sync(tmp_path, capsys):
    from peftsweep.cli import main

    for name, render in PAGES.items():
        assert (ROOT / "docs" / name).read_text() == render(), f"docs/{name} is stale: run `peftsweep docs`"
    # the command itself writes those pages
    assert main(["docs", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PAGES)
    assert all((tmp_path / name).read_text() == (ROOT / "docs" / name).read_text() for name in PAGES)
    assert capsys.readouterr().out.count("wrote ") == len(PAGES)


def test_every_config_key_and_method_is_documented():
    config, methods = (ROOT / "docs" / "config.md").read_text(), (ROOT / "docs" / "methods.md").read_text()
    for key in ("`early_stopping.enabled`", "`search.time_budget_s`", "`resources.gpus_per_worker`", "`storage`",
                "`confirm.seeds`", "`confirm.best_per_method`", "`confirm.confidence`", "`search.warm_start`",
                "`early_stopping.objective`", "`resources.strategy`", "`resources.cpu_offload`",
                "`resources.gpu_memory_gb`", "`train.precision`"):
        assert key in config
    assert all(f"## `{name}`" in methods for name in REGISTRY)
    metrics = (ROOT / "docs" / "metrics.md").read_text()
    assert all(f"| `{name}` |" in metrics for name in METRICS)
    assert "|  |" not in config  # every key has a description


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for link in ("docs/config.md", "docs/methods.md", "CHANGELOG.md"):
        assert link in readme and (ROOT / link).is_file()
    linked = [part.split(")")[0] for part in readme.split("](")[1:]]
    missing = [p for p in linked if not p.startswith(("http", "#")) and not (ROOT / p.split("#")[0]).exists()]
    assert missing == []
