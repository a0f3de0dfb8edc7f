"""Property: whatever config tree and data file a user hands to `peftsweep validate`, it answers with exit 0 or 2,
never a traceback, and writes nothing (no MLflow store, no output folder, no file anywhere under its working folder
or at a path the config names).

Generated: config trees that start from a valid one and get keys set at random (the schema's own dotted keys and
random ones) to random values (nested lists and mappings, unicode, huge and negative numbers, NaN, None), sometimes a
config file of random bytes; data files of random bytes, CSV / TSV / JSONL shapes with random cells, empty and
one-row files, in UTF-8, UTF-16 or Latin-1, under a random extension. The suite runs PEFTSWEEP_PROPERTY_EXAMPLES
examples (default 200); e.g. `PEFTSWEEP_PROPERTY_EXAMPLES=5000 pytest tests/search/test_inputs_property.py` for more.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from peftsweep.cli import main
from peftsweep.search.config import SweepConfig, apply_overrides
from peftsweep.spaces import REGISTRY

EXAMPLES = int(os.environ.get("PEFTSWEEP_PROPERTY_EXAMPLES", "200"))


def schema_keys(model, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema (nested settings included), plus each method's parameters."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys += schema_keys(annotation, f"{prefix}{name}.")
    return keys


KEYS = schema_keys(SweepConfig) + [f"methods.{m}.{p}" for m, spec in REGISTRY.items() for p in spec.params]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=24),
                    st.sampled_from(["all", "auto", "lora", "grid", "tpe", "generation", "", "..", "/", "-1"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=3)),
                      max_leaves=8)
mutations = st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=12)), values),
                     max_size=4)

cells = st.one_of(st.text(max_size=20), st.integers(-5, 5), st.floats(allow_nan=True), st.none(), st.booleans())
rows = st.lists(st.lists(cells, min_size=0, max_size=4), max_size=12)
encodings = st.sampled_from(["utf-8", "utf-16", "latin-1"])
suffixes = st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt", ""])


@st.composite
def data_files(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["bytes", "delimited", "jsonl", "good"]))
    suffix = ".csv" if kind == "good" else draw(suffixes)  # a good file under its own name: some examples pass
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=400))
    if kind == "jsonl":
        records = draw(st.lists(st.dictionaries(st.sampled_from(["text", "label", "x", "prompt"]), values,
                                                max_size=3), max_size=8))
        text = "".join(json.dumps(r, default=str) + "\n" for r in records)
        return suffix or ".jsonl", text.encode(draw(encodings), errors="replace")
    sep = "\t" if suffix == ".tsv" else ","
    header = draw(st.sampled_from([["text", "label"], ["label", "text"], ["text"], [], ["a", "b", "c"]]))
    body = draw(rows) if kind == "delimited" else [[f"row {i} word{i % 5}", ["a", "b", "c"][i % 3]]
                                                    for i in range(draw(st.integers(20, 60)))]
    lines = [sep.join(header)] * (bool(header)) + [sep.join("" if c is None else str(c) for c in r) for r in body]
    encoding = "utf-8" if kind == "good" else draw(encodings)
    return suffix or ".csv", ("\n".join(lines) + "\n").encode(encoding, errors="replace")


def files_under(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*")}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=data_files(), changes=st.one_of(st.just([]), mutations),
       raw_config=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=200)))
def test_validate_answers_0_or_2_and_writes_nothing(tiny_model, data, changes, raw_config):
    code, problem = answer(tiny_model, data, changes, raw_config)
    event(f"exit {code} {problem}".strip())  # what was found, for --hypothesis-show-statistics


def test_the_valid_config_passes_and_a_broken_one_does_not(tiny_model):
    """The property above holds for a validate that refused everything: its starting point must pass."""
    good = ".csv", "text,label\n" + "".join(f"row {i} word{i % 5},{'abc'[i % 3]}\n" for i in range(40))
    assert answer(tiny_model, (good[0], good[1].encode()), [], None)[0] == 0
    code, problem = answer(tiny_model, (good[0], good[1].encode()), [("train.epochs", -1)], None)
    assert (code, problem) == (2, "train.epochs")


def answer(tiny_model, data, changes, raw_config) -> tuple[int, str]:
    """`peftsweep validate` on this config and data file, checked as every answer must be: its exit code and the key
    of the first problem it names."""
    suffix, content = data
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_file = work / f"data{suffix}"
        data_file.write_bytes(content)
        config = {"name": "prop", "model": tiny_model, "data": {"train_file": str(data_file), "max_length": 16},
                  "output_dir": str(work / "out"), "methods": ["lora", "prompt"],
                  "search": {"num_samples": 2}}
        for key, value in changes:  # one at a time, in order: a later key may replace an earlier one's section
            apply_overrides(config, {key: value})
        path = work / "sweep.yaml"
        path.write_bytes(raw_config if raw_config is not None else yaml.safe_dump(config).encode())
        named = {v for k, v in config.items() if k in ("output_dir", "storage") and isinstance(v, str) and v}
        existed = {v: Path(v).expanduser().exists() for v in named if "\x00" not in v}
        before = files_under(work)
        err, out = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(work)  # relative paths in the config land here
        # A handler another test in this process left on a closed stream makes `logging` print "--- Logging error
        # ---" with a traceback: that is the test process's state, not peftsweep's answer. Off while it answers.
        raising, logging.raiseExceptions = logging.raiseExceptions, False
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    code = main(["validate", str(path)])
                except SystemExit as exc:  # argparse
                    code = exc.code
        finally:
            os.chdir(cwd)
            logging.raiseExceptions = raising
        assert code in (0, 2), (code, err.getvalue()[-2000:])
        problem = next((line.strip()[2:].split(":")[0] for line in err.getvalue().splitlines()
                        if line.strip().startswith("- ")), "")
        assert "Traceback" not in err.getvalue() + out.getvalue()
        assert files_under(work) == before, sorted(map(str, files_under(work) - before))[:5]
        for value, was in existed.items():
            assert Path(value).expanduser().exists() == was, value
        if code == 2:
            assert err.getvalue().strip(), "exit 2 with no message"
        return code, problem
