"""What a ``--data`` value names, and the datasets it builds.

One place decides, with no extra flag, which kind of data a value is
(:func:`resolve_source`), in this order:

* ``digits``: scikit-learn's bundled 8x8 digits (handled by the trainer);
* ``hf:ORG/NAME``: a Hugging Face Hub dataset, through the Hub cache;
* WebDataset shards: a folder of ``train-*.tar`` (+ ``val-*.tar``), a brace pattern
  ``.../train-{000000..000099}.tar`` or a ``.tar`` URL (:mod:`fastvit.data.shards`);
* a ``datasets`` folder written by ``save_to_disk``, or Parquet files
  (:mod:`fastvit.data.hf_datasets`);
* otherwise an ImageFolder (``train/`` + ``val/``, or class folders).

Every kind gives ``(train, val, classes)`` with the class names taken from the
data, and single splits for ``evaluate`` and int8 calibration.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from fastvit.data.datasets import (
    ImageFolderDataset,
    build_image_folder,
    count_images,
    describe_val_split,
    find_split,
)
from fastvit.errors import DataError

FOLDER, DIGITS, SHARDS, HF = "folder", "digits", "shards", "hf"


@dataclass(frozen=True)
class DataSource:
    """A ``--data`` value and the kind of data it names."""

    value: str
    kind: str

    def describe(self) -> str:
        return {FOLDER: "ImageFolder", DIGITS: "bundled digits", SHARDS: "WebDataset shards",
                HF: "Hugging Face dataset"}[self.kind] + f" {self.value}"

    def build(self, *, train_transform: Callable | None, eval_transform: Callable | None,
              bad_images: str = "skip", val_fraction: float | None = None, seed: int = 0
              ) -> tuple[Dataset, Dataset, list[str]]:
        """``(train, val, classes)``; a source without a val split holds a seeded,
        stratified ``val_fraction`` of train out (folders and datasets; shards need val shards)."""
        if self.kind == FOLDER:
            return build_image_folder(self.value, train_transform=train_transform,
                                      eval_transform=eval_transform, bad_images=bad_images,
                                      val_fraction=val_fraction, seed=seed)
        if self.kind == SHARDS:
            from fastvit.data.shards import open_shards

            train = open_shards(self.value, "train", transform=train_transform,
                                bad_images=bad_images)
            val = open_shards(self.value, "val", transform=eval_transform,
                              bad_images=bad_images, classes=train.classes)
            return train, val, list(train.classes)
        if self.kind == HF:
            from fastvit.data.hf_datasets import load_dataset_dict, open_hf_split

            splits = load_dataset_dict(self.value)
            train = open_hf_split(self.value, "train", transform=train_transform,
                                  bad_images=bad_images, splits=splits)
            val = open_hf_split(self.value, "val", transform=eval_transform,
                                bad_images=bad_images, splits=splits)
            if val is None:
                if val_fraction is None:
                    raise DataError(f"{self.value} has no validation/val/test split")
                return hold_out(train, val_fraction, seed, eval_transform)
            if val.classes != train.classes:
                raise DataError(f"the train and val splits of {self.value} have different "
                                f"class names")
            return train, val, list(train.classes)
        raise DataError(f"{self.describe()} is built by the trainer")

    def has_val(self) -> bool:
        """Whether the data has its own val split (else one is held out of train)."""
        if self.kind == FOLDER:
            from fastvit.data.datasets import has_split

            return has_split(self.value, "val")
        if self.kind == HF:
            from fastvit.data.hf_datasets import load_dataset_dict, pick_split

            return pick_split(load_dataset_dict(self.value), "val", self.value) is not None
        return True

    def train_count(self, limit: int | None = None) -> int | None:
        """Training samples, cheaply: a folder's images (counting stops at ``limit``), the
        shards' ``shards.json`` counts, a datasets train split's rows; None when unknown."""
        if self.kind == FOLDER:
            return count_images(find_split(self.value, "train"), limit=limit)
        if self.kind == SHARDS:
            from fastvit.data.shard_index import find_shard_urls, read_index

            counts = read_index(self.value).get("counts", {})
            names = [u.rsplit("/", 1)[-1] for u in find_shard_urls(self.value, "train")]
            return sum(int(counts[n]) for n in names) if all(n in counts for n in names) \
                else None
        if self.kind == HF:
            from fastvit.data.hf_datasets import load_dataset_dict, pick_split

            return len(pick_split(load_dataset_dict(self.value), "train", self.value))
        return None

    def describe_val(self, val_fraction: float, seed: int) -> str:
        if self.kind == FOLDER:
            return describe_val_split(self.value, val_fraction, seed)
        if self.kind == SHARDS:
            return f"the val shards of {self.value}"
        if self.has_val():
            return f"the validation split of {self.value}"
        return (f"{val_fraction:.0%} of each class of the train split of {self.value} held "
                f"out (stratified, seed {seed})")

    def open_split(self, split: str, transform: Callable | None, *, bad_images: str = "skip",
                   class_names: list[str] | None = None) -> Dataset:
        """One split (``train`` / ``val``) for evaluation or calibration."""
        if self.kind == FOLDER:
            folder = find_split(self.value, split)
            class_to_idx = None
            if class_names is not None:
                class_to_idx = {name: i for i, name in enumerate(class_names)}
            return ImageFolderDataset(folder, transform, bad_images, class_to_idx)
        if self.kind == SHARDS:
            from fastvit.data.shards import open_shards

            return open_shards(self.value, split, transform=transform, bad_images=bad_images)
        if self.kind == HF:
            from fastvit.data.hf_datasets import open_hf_split

            found = open_hf_split(self.value, split, transform=transform, bad_images=bad_images)
            if found is None:
                raise DataError(f"{self.value} has no validation/val/test split")
            return found
        raise DataError(f"{self.describe()} has no {split} split to open here")

    def eval_split(self, transform: Callable | None, *, split: str = "val",
                   bad_images: str = "skip", held_out: tuple[float, int] | None = None
                   ) -> tuple[Dataset, list[str]]:
        """What ``evaluate`` and ``predict`` score, and its class names: ``split``; for
        ``val`` of a folder or datasets without a val split, the part of train a training run
        held out (``held_out``: its ``(val_fraction, seed)``), else the whole train split."""
        if self._val_from_train(split):
            train = self.open_split("train", transform, bad_images=bad_images)
            if held_out is None:
                return train, list(train.classes)
            return hold_out(train, *held_out, transform)[1], list(train.classes)
        dataset = self.open_split(split, transform, bad_images=bad_images)
        return dataset, list(dataset.classes)

    def _val_from_train(self, split: str) -> bool:
        """A val split asked of a folder or datasets source that has none (it comes out of
        train)."""
        return split == "val" and self.kind in (FOLDER, HF) and not self.has_val()

    def describe_eval(self, split: str = "val", held_out: tuple[float, int] | None = None
                      ) -> str:
        """Which samples :meth:`eval_split` gives, in words."""
        if self._val_from_train(split):
            if held_out is not None:
                return self.describe_val(*held_out)
            return f"the whole train split of {self.value} (it has no val split)"
        return f"the {split} split of {self.describe()}"


def named_samples(dataset: Any) -> Iterator[tuple[str, Any]]:
    """``(name, (image, label) or BadSample)`` of every sample of an evaluation split, in
    order, named as ``skipped_images.txt`` names them (a file's path, ``SHARD.tar:KEY.EXT``,
    ``SOURCE[split]#ROW``)."""
    from fastvit.data.shards import ShardDataset

    if isinstance(dataset, ShardDataset):
        yield from dataset.named_items()
        return
    names = sample_names(dataset)
    fetch = getattr(dataset, "__getitems__", None)
    step = 64
    for start in range(0, len(names), step):
        indices = list(range(start, min(start + step, len(names))))
        items = fetch(indices) if fetch is not None else [dataset[i] for i in indices]
        yield from zip(names[start:start + step], items, strict=True)


def sample_names(dataset: Any) -> list[str]:
    """The names of a map-style split's samples (a folder's paths, a datasets split's rows)."""
    from fastvit.data.hf_datasets import HFImageDataset

    if isinstance(dataset, Subset):
        inner = sample_names(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if isinstance(dataset, HFImageDataset):
        return [dataset.row_name(i) for i in range(len(dataset))]
    return [path for path, _ in dataset.samples]


def hold_out(train: Any, val_fraction: float, seed: int, eval_transform: Callable | None
             ) -> tuple[Dataset, Dataset, list[str]]:
    """A seeded, stratified ``val_fraction`` of a map-style ``train`` (with ``targets``)."""
    from fastvit.data.splits import stratified_split

    held = copy.copy(train)
    held.transform = eval_transform
    train_idx, val_idx = stratified_split(torch.as_tensor(train.targets), val_fraction, seed)
    return Subset(train, train_idx.tolist()), Subset(held, val_idx.tolist()), list(train.classes)


def resolve_source(value: str) -> DataSource:
    """The kind of data ``value`` names (see the module docstring for the order)."""
    from fastvit.data.hf_datasets import HUB_PREFIX, is_saved_dataset, parquet_files
    from fastvit.data.shard_index import looks_like_shards

    if value == DIGITS:
        return DataSource(value, DIGITS)
    if value.startswith(HUB_PREFIX):
        return DataSource(value, HF)
    if looks_like_shards(value):
        return DataSource(value, SHARDS)
    path = Path(value)
    if path.is_dir() and is_saved_dataset(path):
        return DataSource(value, HF)
    if (path.is_file() and path.suffix == ".parquet") or (
            path.is_dir() and parquet_files(path) and count_images(path, limit=1) == 0):
        return DataSource(value, HF)
    return DataSource(value, FOLDER)
