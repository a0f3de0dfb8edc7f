"""The registry refuses what would otherwise drop a method silently, and nothing outside spaces/ names a method."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from peftsweep.spaces import REGISTRY, RegistryError, discover

ROOT = Path(__file__).resolve().parents[2]
METHOD_MODULE = '''
from peftsweep.spaces.full import SPEC as FULL
from dataclasses import replace
SPEC = replace(FULL, name={name!r})
'''


def make_package(tmp_path: Path, modules: dict[str, str]) -> tuple[str, list[str]]:
    package = tmp_path / "fake_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in modules.items():
        (package / f"{name}.py").write_text(text)
    sys.path.insert(0, str(tmp_path))
    return "fake_methods", [str(package)]


@pytest.fixture
def clean_import_path():
    saved = list(sys.path)
    yield
    sys.path[:] = saved
    for name in [m for m in sys.modules if m == "fake_methods" or m.startswith("fake_methods.")]:
        del sys.modules[name]


def test_discovers_every_method_module(tmp_path, clean_import_path):
    package, path = make_package(tmp_path, {"one": METHOD_MODULE.format(name="one"),
                                            "two": METHOD_MODULE.format(name="two"), "helpers": "X = 1\n"})
    assert list(discover(package, path, shared=frozenset({"helpers"}))) == ["one", "two"]


def test_a_module_without_spec_is_refused(tmp_path, clean_import_path):
    package, path = make_package(tmp_path, {"one": METHOD_MODULE.format(name="one"), "forgot": "X = 1\n"})
    with pytest.raises(RegistryError, match="fake_methods.forgot defines no SPEC"):
        discover(package, path, shared=frozenset())


def test_two_methods_of_one_name_are_refused(tmp_path, clean_import_path):
    package, path = make_package(tmp_path, {"a": METHOD_MODULE.format(name="same"),
                                            "b": METHOD_MODULE.format(name="same")})
    with pytest.raises(RegistryError, match="two methods are named 'same': fake_methods.a and fake_methods.b"):
        discover(package, path, shared=frozenset())


def python_files_outside_spaces_and_tests() -> list[Path]:
    skip = {"spaces", "tests", ".venv", "build", "dist", ".git"}
    return [p for p in ROOT.rglob("*.py") if not (set(p.relative_to(ROOT).parts[:-1]) & skip)
            and not p.relative_to(ROOT).parts[0].startswith(".")]


def test_no_method_is_named_outside_spaces_and_tests():
    """Callers ask the MethodSpec; they never test a method's name. (Which methods a sweep or a benchmark runs is
    data: configs/*.yaml, bench/workloads.yaml.)"""
    files = python_files_outside_spaces_and_tests()
    assert any(p.name == "summary.py" for p in files)  # the scan sees the package's code
    literal = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, REGISTRY)))
    # the one word shared with something else: the generation data's default prompt column is called "prompt"
    not_a_method = {("trainers/data.py", 'prompt_column: str = Field("prompt", description="generation: column holding '
                                         'the prompt")')}
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if literal.search(line) and (str(p.relative_to(ROOT)), line.strip()) not in not_a_method]
    assert found == []
