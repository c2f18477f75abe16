"""Reproducible, resumable training input: the adapter between a recipe and ``fastvit.data``.

Exact resume needs every random draw of the input pipeline to be a function of
where the run is, not of how it got there:

* the order of an epoch is a permutation seeded by ``(seed, epoch)``
  (``DistributedSampler``'s, so each rank gets its own shard);
* each sample's augmentation runs under RNGs seeded by ``(seed, epoch, index)``
  (the sampler hands ``(index, sample_seed)`` to :class:`SeededDataset`), so it
  is the same in any DataLoader worker and after any restart;
* resuming mid-epoch skips the consumed indices in the sampler, so skipped
  images are never even decoded.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info

from fastvit.errors import ConfigError, DataError
from fastvit.train.config import TrainConfig

DIGITS = "digits"


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (independent streams per tuple)."""
    high, low = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2)
    return (int(high) << 31) ^ int(low)


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU, and CUDA when present).

    ``torch.manual_seed`` would also do it but costs ~0.25 ms (it visits every
    backend); this runs once per micro-batch and once per sample.
    """
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block under RNGs seeded with ``seed``.

    In the main process the previous states are restored afterwards; DataLoader
    worker processes own their RNGs, so there the (costly) restore is skipped.
    """
    if get_worker_info() is not None:
        seed_all(seed)
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state()
    try:
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.default_generator.manual_seed(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


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
                       pin_memory: bool = False) -> DataLoader:
    """Loader of :class:`fastvit.data.Batch` es; call ``loader.sampler.set_epoch`` each epoch."""
    from fastvit.data import collate_skip_bad

    sampler = ResumableEpochSampler(dataset, batch_size, seed=seed, rank=rank,
                                    world_size=world_size, batch_multiple=batch_multiple)
    return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler,
                      num_workers=workers, collate_fn=collate_skip_bad, pin_memory=pin_memory,
                      drop_last=True, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset, list[str]]:
    """``(train, val, classes)`` for ``data.path`` (an ImageFolder root or ``digits``).

    Raises :class:`DataError` for a missing/empty split, no class folders or
    different class sets, before any model is built.
    """
    from fastvit.data import (
        build_digits,
        build_eval_transform,
        build_image_folder,
        build_train_transform,
    )
    from fastvit.model import VARIANTS

    data = cfg.data
    if not data.path:
        raise ConfigError("no training data: pass --data DIR (an ImageFolder root with train/ "
                          "and val/ or validation/) or --data digits")
    if data.path == DIGITS:
        return build_digits(data.image_size, seed=0, val_fraction=0.2, augment=True)
    rand_augment = None
    if data.randaugment_magnitude > 0:
        rand_augment = (f"rand-m{data.randaugment_magnitude}-mstd{data.randaugment_mstd}"
                        f"-n{data.randaugment_num_ops}")
    train_tf = build_train_transform(
        data.image_size, interpolation=data.interpolation, hflip=data.hflip,
        rand_augment=rand_augment, re_prob=data.random_erasing, scale=tuple(data.scale),
        ratio=tuple(data.ratio))
    crop_pct = data.crop_pct or VARIANTS[cfg.model.variant].crop_pct
    eval_tf = build_eval_transform(data.image_size, crop_pct, data.interpolation)
    train, val, classes = build_image_folder(data.path, train_transform=train_tf,
                                             eval_transform=eval_tf,
                                             bad_images=data.bad_images)
    if len(classes) < 2:
        raise DataError(f"{data.path} has {len(classes)} class folder(s); a classifier needs "
                        f"at least 2")
    return train, val, classes
