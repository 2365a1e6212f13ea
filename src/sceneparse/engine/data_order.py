"""The order in which training visits the images: a pure function of ``(seed, epoch)``.

Every epoch is a permutation drawn from a generator seeded with ``(seed, epoch)``, wrapped around
(as torch's ``DistributedSampler`` pads) to a whole number of *global* batches, so that every batch
is full. Global batch ``k`` of the epoch holds positions ``k * B .. (k + 1) * B - 1``; under
``torchrun`` rank ``r`` of ``W`` takes the ``r``-th contiguous slice of ``B / W`` of them, so one
process with batch ``B`` and ``W`` processes with ``B / W`` each see the same images per step.

Because the order depends on nothing else, ``--resume`` continues an epoch exactly by skipping the
batches already done, and augmentation is seeded per sample by ``(seed, epoch, position)``
(:func:`sample_seed`), independent of ``DataLoader`` workers and of where a run was interrupted.
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: what the ``DataLoader`` hands the dataset for one sample: ``(epoch, position in the epoch, index)``
SampleKey = tuple[int, int, int]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (NumPy's ``SeedSequence`` hashing: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values] + [len(values)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2 ** 63 - 1)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the augmentation of the sample at ``position`` of ``epoch``."""
    return mix_seed(seed, epoch, position, 1)


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """``int64 [num_items]``: the permutation of ``epoch``."""
    g = torch.Generator().manual_seed(mix_seed(seed, epoch))
    return torch.randperm(num_items, generator=g)


def iters_per_epoch(num_items: int, global_batch: int) -> int:
    """Global batches per epoch, ``ceil(num_items / global_batch)`` (the last one wraps around)."""
    if num_items < 1 or global_batch < 1:
        raise ValueError(f"need at least one item and a batch of at least one (got {num_items}, {global_batch})")
    return math.ceil(num_items / global_batch)


def epoch_batches(num_items: int, global_batch: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                  start: int = 0, stop: int | None = None) -> list[list[SampleKey]]:
    """This rank's batches ``start .. stop - 1`` of ``epoch`` as lists of :data:`SampleKey`.

    ``global_batch`` must be divisible by ``world_size``; ``stop`` defaults to the end of the epoch.
    """
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
    n_iter = iters_per_epoch(num_items, global_batch)
    stop = n_iter if stop is None else min(int(stop), n_iter)
    if not 0 <= start <= stop:
        raise ValueError(f"batches {start}..{stop} outside the epoch's 0..{n_iter}")
    local = global_batch // world_size
    order = epoch_order(num_items, seed, epoch)
    need = n_iter * global_batch
    order = order.repeat(math.ceil(need / num_items))[:need]
    pos = torch.arange(need).view(n_iter, world_size, local)[start:stop, rank]
    idx = order.view(n_iter, world_size, local)[start:stop, rank]
    return [[(int(epoch), p, i) for p, i in zip(pr, ir)] for pr, ir in zip(pos.tolist(), idx.tolist())]


__all__ = ["SampleKey", "epoch_batches", "epoch_order", "iters_per_epoch", "mix_seed", "sample_seed"]
