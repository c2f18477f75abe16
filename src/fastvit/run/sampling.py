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

import copy
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from fastvit.data import collate_skip_bad
from fastvit.data.loaders import SignalSafeLoader
from fastvit.data.shards import ShardDataset
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

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        """A batch (the DataLoader's batched fetch): a dataset with ``readers`` (a datasets
        split) reads the bytes of all its rows at once; each sample still decodes under
        its own seeds."""
        readers = batch_readers(self.dataset)
        if readers is None:
            return [self[key] for key in keys]
        out = []
        for read, (_, seed) in zip(readers([index for index, _ in keys]), keys, strict=True):
            with isolated_rng(seed):
                out.append(read())
        return out


def batch_readers(dataset: Dataset) -> Callable[[list[int]], list[Callable[[], Any]]] | None:
    """``dataset.readers`` (one decode call per index, the data read at once), through
    ``Subset``s (a held-out split); None when the dataset has none."""
    if isinstance(dataset, Subset):
        inner = batch_readers(dataset.dataset)
        if inner is None:
            return None
        indices = dataset.indices
        return lambda batch: inner([indices[i] for i in batch])
    return getattr(dataset, "readers", None)


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
                       pin_memory: bool = False, collate_fn: Callable | None = None,
                       streams: int | None = None) -> DataLoader | ShardTrainLoader:
    """A resumable training loader; call ``loader.sampler.set_epoch(epoch, start)`` each epoch.

    ``collate_fn`` defaults to :func:`fastvit.data.collate_skip_bad` (batches of
    :class:`fastvit.data.Batch`, unreadable images dropped and listed). Shards get a
    :class:`ShardTrainLoader` of ``streams`` streams (default: one per worker).
    """
    if isinstance(dataset, ShardDataset):
        return ShardTrainLoader(dataset, batch_size=batch_size,
                                streams=streams or max(1, workers), seed=seed, rank=rank,
                                world_size=world_size, batch_multiple=batch_multiple,
                                pin_memory=pin_memory, collate_fn=collate_fn)
    sampler = ResumableEpochSampler(dataset, batch_size, seed=seed, rank=rank,
                                    world_size=world_size, batch_multiple=batch_multiple)
    return SignalSafeLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler,
                            num_workers=workers, collate_fn=collate_fn or collate_skip_bad,
                            pin_memory=pin_memory, drop_last=True,
                            persistent_workers=workers > 0,
                            generator=torch.Generator().manual_seed(seed))


def _seeded_sample(seed: int, epoch: int, ordinal: int) -> Any:
    """A shard sample's augmentation RNGs: seeded by ``(seed, epoch, sample)``, as above."""
    return isolated_rng(derive_seed(seed, epoch, ordinal))


class ShardEpochs:
    """What :func:`fastvit.run.epochs.run_epochs` asks of a loader's sampler, for shards."""

    def __init__(self, dataset: ShardDataset) -> None:
        self.dataset = dataset

    @property
    def usable_batches(self) -> int:
        return self.dataset.usable_batches()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.dataset.set_epoch(epoch, min(start_batch, self.usable_batches))


class ShardTrainLoader:
    """The training loader of WebDataset shards: one DataLoader worker per stream of
    :func:`fastvit.data.shards.stream_plan`, new workers every epoch (they copy the
    epoch and start batch set through ``sampler.set_epoch``)."""

    def __init__(self, dataset: ShardDataset, *, batch_size: int, streams: int, seed: int,
                 rank: int, world_size: int, batch_multiple: int, pin_memory: bool,
                 collate_fn: Callable | None) -> None:
        dataset = copy.copy(dataset)
        dataset.batch_size, dataset.seed, dataset.streams = batch_size, seed, streams
        dataset.rank, dataset.world_size, dataset.batch_multiple = rank, world_size, \
            batch_multiple
        dataset.sample_context = partial(_seeded_sample, seed)
        self.dataset, self.sampler = dataset, ShardEpochs(dataset)
        self.batch_size, self.streams, self.pin_memory = batch_size, streams, pin_memory
        self.collate_fn = collate_fn or collate_skip_bad

    def __len__(self) -> int:
        return self.sampler.usable_batches - self.dataset.start_batch

    def __iter__(self) -> Iterator[Any]:
        workers = self.streams if self.streams > 1 else 0
        loader = SignalSafeLoader(self.dataset, batch_size=self.batch_size, num_workers=workers,
                                  collate_fn=self.collate_fn, pin_memory=self.pin_memory,
                                  drop_last=False, persistent_workers=False)
        return iter(loader)

    def describe(self) -> str:
        """The header line: what one epoch is."""
        d, split = self.dataset, self.dataset.split
        per_epoch = self.sampler.usable_batches * self.batch_size * d.world_size
        return (f"  shards: {len(split.urls)} train shards, {split.total} samples; an epoch "
                f"is {per_epoch} of them ({self.sampler.usable_batches} batches of "
                f"{self.batch_size} x {d.world_size} process(es), the rest wait for the next "
                f"shuffle), {self.streams} stream(s) per process, shuffle buffer "
                f"{d.shuffle_buffer}")
