"""A sweep's state on disk (`<output_dir>/sweep.json`), so that an interrupted sweep can be continued.

The file names the MLflow parent run, Tune's experiment directory and the config the sweep started with. Tune keeps
its own experiment state (trials, searcher) in that directory; Ray Train keeps each trial's checkpoints. `--resume`
picks all three up again; `--restart` abandons an interrupted sweep and starts a new one beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peftsweep.errors import UserError

SWEEP_STATE_FILE = "sweep.json"


@dataclass
class SweepState:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    tune_path: str  # Tune's experiment directory
    config: dict[str, Any]  # the validated config the sweep started with
    status: str = "running"  # running | finished | failed
    stage: str = "search"  # search | confirm: where a resumed sweep continues
    confirm_seeds: int = 0  # confirm runs per configuration (confirm.seeds, or `peftsweep confirm --seeds`)
    confirm_tune_path: str | None = None  # the confirm pass's Tune experiment directory, once it has started


def read_state(out: Path) -> SweepState | None:
    path = Path(out) / SWEEP_STATE_FILE
    return SweepState(**json.loads(path.read_text())) if path.is_file() else None


def write_state(out: Path, state: SweepState) -> None:
    path = Path(out) / SWEEP_STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)  # atomic: a kill while writing leaves the old file


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= flatten(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): tree}


def config_changes(started: dict[str, Any], now: dict[str, Any]) -> list[str]:
    old, new = flatten(started), flatten(now)
    return [f"{key}: the sweep started with {old.get(key)!r}, the config now says {new.get(key)!r}"
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def sweep_to_resume(out: Path, config: dict[str, Any], resume: bool, restart: bool) -> SweepState | None:
    """The interrupted sweep to continue (with --resume), or None to start a new one; UserError when unclear."""
    if resume and restart:
        raise UserError("--resume and --restart: choose one")
    state = read_state(out)
    interrupted = state is not None and state.status == "running"
    if resume:
        if state is None:
            raise UserError(f"--resume: {out} holds no sweep to resume (no {SWEEP_STATE_FILE}); run without --resume")
        if not interrupted:
            raise UserError(f"--resume: the sweep in {out} already ended ({state.status}); nothing to resume. "
                            f"Run without --resume to start a new sweep there")
        changes = config_changes(state.config, config)
        if changes:
            raise UserError(changes + ["resume with the config the sweep started with, or use --restart"],
                            "--resume: the config differs from the interrupted sweep's")
        return state
    if interrupted and not restart:
        raise UserError(f"{out} holds an interrupted sweep (MLflow parent run {state.parent_run_id}): continue it "
                        f"with --resume, or abandon it and start a new one with --restart")
    return None
