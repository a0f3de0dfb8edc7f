"""Who may import whom (the design card): each boundary as a test. Every `import` statement is read, those inside
functions too, so a function-local import cannot hide a crossing; one subprocess per layer checks what importing it
really loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder -> the peftsweep modules it may not import (prefixes)
FORBIDDEN = {
    "spaces": ["peftsweep.trainers", "peftsweep.search", "peftsweep.dashboards", "peftsweep.cli"],
    "trainers": ["peftsweep.search", "peftsweep.dashboards", "peftsweep.cli"],
    "search": ["peftsweep.dashboards", "peftsweep.cli"],
    "search/results": ["peftsweep.search.tracking", "peftsweep.search.orchestration", "peftsweep.search.plan",
                       "peftsweep.search.config", "mlflow", "ray"],
    "search/tracking": ["peftsweep.search.orchestration", "peftsweep.search.plan"],
    "dashboards": ["peftsweep.search.orchestration", "peftsweep.cli", "ray"],
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("folder", list(FORBIDDEN))
def test_no_import_crosses_a_boundary(folder):
    crossings = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 for line, name in imports_of(path)
                 if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder])]
    assert crossings == []


def test_the_boundary_rules_see_a_crossing(tmp_path):
    """The reader finds a function-local import (the kind that once hid a cycle)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from peftsweep.search.orchestration.sweep import run_sweep\n")
    assert (2, "peftsweep.search.orchestration.sweep") in imports_of(module)


@pytest.mark.parametrize(("module", "absent"), [
    # results: pure functions of records
    ("peftsweep.search.results.summary", ["ray", "mlflow", "peftsweep.search.tracking",
                                          "peftsweep.search.orchestration"]),
    ("peftsweep.search.tracking.runs", ["peftsweep.search.orchestration"]),
])
def test_a_layer_loads_nothing_above_it(module, absent):
    probe = (f"import sys, {module}; import peftsweep.search.results.confirmation; "
             f"print(' '.join(m for m in {absent!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == [], f"import {module} loaded {result.stdout.split()}"
