"""Start-up cost: what a process imports before it does any work. Each import below costs seconds on 2 cores, paid
by every trial driver (once per sweep) or by every command, so a module that does not use a library must not pull
it in through another module's import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("module", "absent"), [
    ("peftsweep.spaces", ["peft", "transformers", "mlflow"]),  # the registry: PEFT is imported where a method is applied
    ("peftsweep.search.orchestration.trial", ["mlflow", "optuna", "peft", "transformers", "matplotlib"]),  # the trial driver process
])
def test_module_does_not_import_what_it_does_not_use(module, absent):
    probe = f"import sys, {module}; print(' '.join(m for m in {absent!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == [], f"import {module} pulled in {result.stdout.split()}"
