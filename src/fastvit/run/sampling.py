"""The deterministic, resumable data order of every trainer.

Exact resume needs every random draw of the input pipeline to be a function of
where the run is, not of how it got there:

* the order of an epoch is a permutation seeded by ``(seed, epoch)``
  (``DistributedSampler``'s, so each rank gets its own shard);
* each sample's augmentation runs under RNGs seeded by ``(seed, epoch, index)``
  (the sampler hands ``(index, sample_seed)`` to :class:`SeededDataset`), so it
  is the same in any DataLoader worker and after any restart;
* resuming mid-epoch skips the consumed indices in the sampler, so skipped
  samples are never even loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from fastvit.data import collate_skip_bad
from fastvit.data.loaders import SignalSafeLoader
from fastvit.run.seeding import derive_seed, isolated_rng


class SeededDataset(Dataset):
    """Item ``(index, seed)`` is ``dataset[index]`` drawn under RNGs seeded by ``seed``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with isolated_rng(seed):
            return self.dataset[index]


class ResumableEpochSampler(Sampler[tuple[int, int]]):
    """This rank's shuffled indices of one epoch, as ``(index, sample_seed)`` pairs.

    The permutation is ``DistributedSampler``'s (seeded by ``seed + epoch``, padded
    so every rank has the same length). Only ``usable_batches`` full batches are
    used per epoch; :meth:`set_epoch` can start after ``start_batch`` of them.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, batch_multiple: int = 1) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                        shuffle=True, seed=seed, drop_last=False)
        self.batch_size, self.seed = batch_size, seed
        full = len(self.inner) // batch_size
        self.usable_batches = full - full % batch_multiple  # whole accumulation groups only
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, min(start_batch, self.usable_batches)
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(self.inner)[: self.usable_batches * self.batch_size]
        for index in indices[self.start_batch * self.batch_size:]:
            yield index, derive_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return (self.usable_batches - self.start_batch) * self.batch_size


def build_train_loader(dataset: Dataset, *, batch_size: int, workers: int, seed: int,
                       rank: int = 0, world_size: int = 1, batch_multiple: int = 1,
                       pin_memory: bool = False, collate_fn: Callable | None = None
                       ) -> DataLoader:
    """A resumable training loader; call ``loader.sampler.set_epoch(epoch, start)`` each epoch.

    ``collate_fn`` defaults to :func:`fastvit.data.collate_skip_bad` (batches of
    :class:`fastvit.data.Batch`, unreadable images dropped and listed).
    """
    sampler = ResumableEpochSampler(dataset, batch_size, seed=seed, rank=rank,
                                    world_size=world_size, batch_multiple=batch_multiple)
    return SignalSafeLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler,
                            num_workers=workers, collate_fn=collate_fn or collate_skip_bad,
                            pin_memory=pin_memory, drop_last=True,
                            persistent_workers=workers > 0,
                            generator=torch.Generator().manual_seed(seed))
