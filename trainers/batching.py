"""Batches of examples of similar length (`train.group_by_length`), so that padding each batch to its longest example
pads little.

Training: `LengthGroupedBatches`, as Hugging Face Trainer's `group_by_length` does it: each epoch the examples are
shuffled (seeded by the trial's seed and the epoch), cut into mega-batches of `MEGA_BATCH` global batches, each
mega-batch sorted by length and cut into global batches, and the order of all the batches shuffled again. Every
example is seen once per epoch; a trial continued from a checkpoint sees the same batches as one that never stopped.
With several workers each global batch is dealt out across the ranks (rank r takes its r-th, (r + world)-th, ...
examples, so every rank gets examples of the same lengths and the same number of steps); like PyTorch's
DistributedSampler, the first examples are repeated to make the count a multiple of the workers.

Evaluation: `by_length` orders each rank's examples longest first (scores do not depend on the order).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

MEGA_BATCH = 50  # global batches per mega-batch (Hugging Face's LengthGroupedSampler uses 50 too)


class LengthGroupedBatches(Sampler[list[int]]):
    """A batch sampler: this rank's batches of dataset indices, similar lengths together, in a seeded order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches together, in this epoch's order."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        order += order[:(-len(order)) % self.world]  # a multiple of the workers: every rank gets every batch
        size = self.batch_size * self.world
        mega = size * MEGA_BATCH
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start:start + mega], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[self.rank::self.world]

    def __len__(self) -> int:
        count = len(self.lengths) + (-len(self.lengths)) % self.world
        size = self.batch_size * self.world
        mega = size * MEGA_BATCH
        full, rest = divmod(count, mega)
        return full * MEGA_BATCH + -(-rest // size)


def by_length(rows: Sequence[int], lengths: Sequence[int]) -> list[int]:
    """`rows` longest first (a stable sort: equal lengths keep their order)."""
    return sorted(rows, key=lambda i: -lengths[i])


def padded_share(batches: list[list[int]], lengths: Sequence[int]) -> float:
    """The share of padding tokens when each batch is padded to its longest example."""
    real = sum(lengths[i] for batch in batches for i in batch)
    total = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    return 1 - real / total if total else 0.0
