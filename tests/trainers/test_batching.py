"""Batches grouped by length (train.group_by_length): every example once per epoch, in a seeded order, with less
padding than shuffled batches."""

from __future__ import annotations

import random

import pytest
import torch

from peftsweep.trainers.batching import LengthGroupedBatches, by_length, padded_share
from peftsweep.trainers.classification import train_loader
from peftsweep.trainers.loop import begin_epoch

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(3, 40) for _ in range(203)]


def epoch_batches(seed: int, epoch: int, world: int = 1, batch_size: int = 8) -> list[list[list[int]]]:
    """Each rank's batches of one epoch."""
    out = []
    for rank in range(world):
        sampler = LengthGroupedBatches(LENGTHS, batch_size, seed, rank, world)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
        assert len(sampler) == len(out[-1])
    return out


def test_one_worker_sees_every_example_exactly_once_per_epoch_in_a_seeded_order():
    (first,) = epoch_batches(seed=0, epoch=1)
    assert sorted(i for batch in first for i in batch) == list(range(len(LENGTHS)))
    assert epoch_batches(seed=0, epoch=1) == [first]  # the same seed and epoch: the same batches
    assert epoch_batches(seed=0, epoch=2) != [first] and epoch_batches(seed=1, epoch=1) != [first]


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_share_every_example_with_equal_steps(world):
    ranks = epoch_batches(seed=0, epoch=1, world=world, batch_size=4)
    assert len({len(batches) for batches in ranks}) == 1  # every rank takes as many steps (DDP waits on each)
    seen = sorted(i for batches in ranks for batch in batches for i in batch)
    assert set(seen) == set(range(len(LENGTHS)))
    assert len(seen) - len(LENGTHS) == (-len(LENGTHS)) % world  # repeats only to fill the last step
    spreads = [max(LENGTHS[i] for b in step for i in b) - min(LENGTHS[i] for b in step for i in b)
               for step in zip(*ranks)]
    assert max(spreads) <= 5  # the ranks' batches of one step are of similar lengths (lengths run from 3 to 40)


def test_grouping_pads_far_less_than_shuffling():
    (grouped,) = epoch_batches(seed=0, epoch=1)
    order = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [order[i:i + 8] for i in range(0, len(order), 8)]
    assert padded_share(grouped, LENGTHS) < 0.1 < 0.3 < padded_share(shuffled, LENGTHS)


def test_the_loader_reseeds_each_epoch_like_a_restarted_trial(tiny_data):
    split = tiny_data.splits["train"]
    loader = train_loader(split, 8, tiny_data.pad_token_id, seed=3, grouped=True)

    def labels_of_epoch(epoch):
        begin_epoch(loader, 3, epoch)
        return [batch["labels"].tolist() for batch in loader]

    second = labels_of_epoch(2)
    fresh = train_loader(split, 8, tiny_data.pad_token_id, seed=3, grouped=True)  # a restart before epoch 2
    begin_epoch(fresh, 3, 2)
    assert [batch["labels"].tolist() for batch in fresh] == second
    assert labels_of_epoch(1) != second
    assert sum(len(b) for b in second) == len(split)


def test_evaluation_order_is_longest_first_and_keeps_every_row():
    rows = list(range(0, 203, 2))
    ordered = by_length(rows, LENGTHS)
    assert sorted(ordered) == rows
    assert [LENGTHS[i] for i in ordered] == sorted((LENGTHS[i] for i in rows), reverse=True)
