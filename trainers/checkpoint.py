"""Checkpoints: the method's trained parts (adapter-only for PEFT, every weight for `full`) plus a small manifest.

A checkpoint directory holds what `MethodSpec.save` writes and `peftsweep.json`, which names the base model, the
method, its hyperparameters and the labels: enough to rebuild the model with `load_checkpoint` alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from peftsweep.spaces import ParamCounts, TaskName, get_method
from peftsweep.trainers.model import load_base
from peftsweep.trainers.state import TRAINING_SHARDS_DIR, TRAINING_STATE_FILE
from peftsweep.trainers.task_kind import TaskKind
from peftsweep.trainers.tasks import get_task

MANIFEST = "peftsweep.json"
RESUME_ONLY = (TRAINING_STATE_FILE, TRAINING_SHARDS_DIR)  # a checkpoint's training state: for restarts, never shipped


@dataclass(frozen=True)
class TrackedFiles:
    """What of a checkpoint goes to the tracking server."""

    only: tuple[str, ...] | None  # these files; None: every file but `never`
    never: tuple[str, ...]


def tracked_files(method: str) -> TrackedFiles:
    """The method's files and the manifest; only the manifest when its checkpoint holds every weight (they stay in
    Ray's storage); never the resume-only training state."""
    only = (MANIFEST,) if get_method(method).stores_every_weight else None
    return TrackedFiles(only, RESUME_ONLY)


def shipped_mb(directory: Path) -> float:
    """MiB on disk of what the method ships from a checkpoint directory: its files and the manifest, not the
    resume-only training state."""
    total = 0
    for item in Path(directory).iterdir():
        if item.name in RESUME_ONLY:
            continue
        total += sum(f.stat().st_size for f in item.rglob("*") if f.is_file()) if item.is_dir() else item.stat().st_size
    return total / 2**20


def save_checkpoint(model: nn.Module, directory: Path, *, model_name: str, method: str, hparams: dict[str, Any],
                    label_names: list[str], max_length: int, counts: ParamCounts, epoch: int,
                    task: TaskKind) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    get_method(method).save(model, directory)
    manifest = {"model": model_name, "task": task.name, "method": method, "hparams": hparams, "label_names": label_names,
                "max_length": max_length, "epoch": epoch, "params": counts.as_metrics()}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return directory


def gather_trained(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every rank of a sharded (FSDP) model calls it: the whole trainable tensors, on rank 0's CPU (empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                ignore_frozen_params=True))


def load_trained(skeleton: nn.Module, trained: dict[str, torch.Tensor]) -> nn.Module:
    """Put gathered trainable tensors into the method's skeleton (trainers.model.build_skeleton: its base on the meta
    device), so that `MethodSpec.save` writes the same files as from an unsharded model."""
    wanted = {name for name, p in skeleton.named_parameters() if p.requires_grad}
    if missing := sorted(wanted - set(trained)):
        raise RuntimeError(f"the gathered state lacks trainable tensors: {missing[:3]}")
    # each tensor into storage of its own: gathered ones may be views of one buffer, which safetensors refuses
    own = {k: trained.pop(k).clone() for k in sorted(wanted)}
    skeleton.load_state_dict(own, strict=False, assign=True)
    tie = getattr(skeleton, "tie_weights", None)  # an output layer tied to the input embeddings shares the new tensor
    if callable(tie):
        tie()
    return skeleton


def save_gathered_checkpoint(model: nn.Module, directory: Path, *, rank: int, skeleton: Callable[[], nn.Module],
                              **files: Any) -> None:
    """Every rank of a sharded (FSDP) model calls it: the trained tensors are gathered on rank 0, which puts them into
    the method's skeleton (`skeleton()`, e.g. trainers.model.build_skeleton) and writes what `save_checkpoint` writes
    for an unsharded model."""
    trained = gather_trained(model)
    if rank == 0:
        save_checkpoint(load_trained(skeleton(), trained), directory, **files)


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / MANIFEST).read_text())


def load_checkpoint(directory: Path, device: torch.device | None = None,
                    trust_remote_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained model from the base it names and the stored trained parts; returned in eval mode."""
    manifest = read_manifest(directory)
    spec = get_method(manifest["method"])
    kind = get_task(manifest.get("task", TaskName.CLASSIFICATION))  # checkpoints from before generation existed
    base = load_base(manifest["model"], manifest["label_names"], task=kind, spec=spec, device=device,
                     trust_remote_code=trust_remote_code)
    model = spec.load(base, Path(directory), manifest["hparams"], kind.name)
    return model.eval(), manifest
