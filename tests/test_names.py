"""Task-kind names and metric names are written once, in their declaring module; every other module imports them."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from peftsweep.metric_names import METRICS, split_scores
from peftsweep.search.results.records import RECORD_METRICS, TrialRecord
from peftsweep.task_names import TaskName

ROOT = Path(__file__).resolve().parents[1]
CODE = ["spaces", "trainers", "search", "dashboards", "peftsweep"]  # tests, bench and docs may spell them out


def quoted_in(name: str) -> list[str]:
    """Code files (outside the declaring modules) where `name` appears as a string literal of its own."""
    pattern = re.compile(rf"""(?<![\w.])["']{re.escape(name)}["']""")
    return [str(path.relative_to(ROOT)) for folder in CODE for path in sorted((ROOT / folder).rglob("*.py"))
            if path.name not in ("metric_names.py", "task_names.py") and pattern.search(path.read_text())]


@pytest.mark.parametrize("name", [t.value for t in TaskName] + list(METRICS))
def test_each_name_is_written_in_its_declaring_module_only(name):
    assert quoted_in(name) == []


def test_the_scan_finds_a_name_written_elsewhere():
    """The scan is not blind: a quoted name is found; a longer name that ends with it is not."""
    assert re.search(r"""(?<![\w.])["']val_accuracy["']""", 'x = result.get("val_accuracy")')
    assert not re.search(r"""(?<![\w.])["']val_accuracy["']""", 'x = result.get("confirmed_val_accuracy")')


def test_the_record_holds_the_metrics_it_says_it_holds():
    fields = {f.name for f in dataclasses.fields(TrialRecord) if f.default is math.nan or f.type == "float"}
    assert set(RECORD_METRICS) == fields & set(METRICS)
    assert set(RECORD_METRICS) <= set(METRICS)


def test_an_undeclared_score_fails_loudly():
    assert split_scores("val", {"accuracy": 0.5, "macro_f1": 0.4}) == {"val_accuracy": 0.5, "val_macro_f1": 0.4}
    with pytest.raises(KeyError, match="val_bleu"):
        split_scores("val", {"bleu": 0.3})
