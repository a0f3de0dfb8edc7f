"""peftsweep: search the fine-tuning method together with its hyperparameters.

Its parts are `peftsweep.spaces` (the methods), `peftsweep.trainers` (what each Ray Train worker runs),
`peftsweep.search` (config, Tune, MLflow, summary) and `peftsweep.dashboards`. In the repository they are the
top-level folders of the same names (the design card's layout); installed, setuptools puts them inside this package
(`package-dir` in pyproject.toml), so that they add no generic top-level names to site-packages. A checkout used as
it is (an editable install, or a Ray job's uploaded working directory) finds them beside this folder.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"
SUBPACKAGES = ("spaces", "trainers", "search", "dashboards")


class _Checkout(importlib.abc.MetaPathFinder):
    """`peftsweep.<part>` -> the folder `<part>/` beside this package's folder in a source checkout."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        package, _, part = fullname.partition(".")
        if package != __name__ or part not in SUBPACKAGES:
            return None
        folder = self.root / part
        return importlib.util.spec_from_file_location(fullname, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and all((_root / p / "__init__.py").is_file() for p in SUBPACKAGES):
    if not any(isinstance(f, _Checkout) for f in sys.meta_path):
        sys.meta_path.insert(0, _Checkout(_root))
