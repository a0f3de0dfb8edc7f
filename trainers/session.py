"""Where a trial's recipe runs, as the recipe sees it: its rank among the trial's workers, its device, how its model
and batches are placed, how it reports an epoch (with its checkpoint) and finds the last checkpoint.

- `RayTrainSession`: one of the workers of a Ray Train job (a worker group, a process group, Ray Train's own
  checkpoints and restarts).
- `InProcessSession`: the only worker, in the process that asked for the trial (a Tune trial's own process, or the
  command line's): no Train controller, no worker processes, no process group. Checkpoints go into the trial's run
  directory under the names Ray Train gives them (`checkpoint_<date>`, written whole under a temporary name and then
  renamed), so the rest of peftsweep (MLflow, resume, the cleanup of checkpoints) reads them the same way.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable

import ray
import ray.train
import ray.train.torch
import torch
from torch import nn


class RayTrainSession:
    """The recipe as one worker of a Ray Train job."""

    kind = "ray train job"

    def __init__(self) -> None:
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap_model(self, model: nn.Module, move_to_device: bool) -> nn.Module:
        return ray.train.torch.prepare_model(model, move_to_device=move_to_device)

    def wrap_loader(self, loader, shards_itself: bool = False):
        """`shards_itself`: the loader already yields this rank's share (else Ray adds a DistributedSampler)."""
        return ray.train.torch.prepare_data_loader(loader, add_dist_sampler=not shards_itself)

    def report(self, metrics: dict[str, Any], directory: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(directory)) if directory is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def last_checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()


def checkpoint_name() -> str:
    """Ray Train's name for a checkpoint directory (its date sorts the checkpoints)."""
    return f"checkpoint_{datetime.datetime.today().strftime('%Y-%m-%d_%H-%M-%S.%f')}"


PARTIAL = ".partial-"  # a checkpoint being written: never read, removed by the next writer


class InProcessSession:
    """The recipe as a trial's only worker, in this process. `forward(metrics)` hands each epoch's report on (to
    Tune, with `checkpoint_path` set to where its checkpoint was written); `keep`: checkpoints kept in `run_dir`."""

    rank, world = 0, 1
    kind = "trial process"

    def __init__(self, run_dir: str, keep: int, forward: Callable[[dict[str, Any]], None], use_gpu: bool) -> None:
        import pyarrow.fs

        self.run_dir, self.keep, self.forward = run_dir, keep, forward
        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(run_dir)
        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")  # Ray set CUDA_VISIBLE_DEVICES

    def wrap_model(self, model: nn.Module, move_to_device: bool) -> nn.Module:
        return model.to(self.device) if move_to_device else model

    def wrap_loader(self, loader, shards_itself: bool = False):
        return loader  # the only worker; the loop moves each batch to the device

    def _entries(self) -> list:
        import pyarrow.fs

        found = self.fs.get_file_info(pyarrow.fs.FileSelector(self.root, allow_not_found=True))
        return [info for info in found if info.type == pyarrow.fs.FileType.Directory]

    def report(self, metrics: dict[str, Any], directory: Path | None) -> None:
        import pyarrow.fs

        if directory is not None:
            name = checkpoint_name()
            self.fs.create_dir(self.root, recursive=True)
            for stale in self._entries():  # a process killed while writing one
                if stale.base_name.startswith(PARTIAL):
                    self.fs.delete_dir(stale.path)
            partial, final = f"{self.root}/{PARTIAL}{name}", f"{self.root}/{name}"
            self.fs.create_dir(partial, recursive=True)
            pyarrow.fs.copy_files(str(directory), partial, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=self.fs)
            self.fs.move(partial, final)
            metrics = metrics | {"checkpoint_path": final}
            names = sorted(i.base_name for i in self._entries() if i.base_name.startswith("checkpoint_"))
            for old in names[:max(0, len(names) - self.keep)]:
                self.fs.delete_dir(f"{self.root}/{old}")
        self.forward(metrics)

    def last_checkpoint(self) -> ray.train.Checkpoint | None:
        names = sorted(i.base_name for i in self._entries() if i.base_name.startswith("checkpoint_"))
        if not names:
            return None
        return ray.train.Checkpoint(f"{self.root}/{names[-1]}", filesystem=self.fs)
