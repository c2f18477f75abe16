"""``fastvit shards``: write an ImageFolder or a ``datasets`` folder as WebDataset shards.

Each sample is ``KEY.EXT`` (the image file's bytes, not re-encoded) + ``KEY.cls``
(the class index as text). Training samples are written in a seeded random order
so that every shard mixes the classes (a shuffle buffer can only mix what a few
shards hold); val samples keep their order. Every shard is written to a
temporary file and moved into place when complete, and ``shards.json`` (class
names, per-shard counts), written last, lists only complete shards.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastvit.data.datasets import find_split, has_split, list_class_dirs
from fastvit.data.shard_index import SHARDS_JSON
from fastvit.errors import ConfigError, DataError
from fastvit.extras import require
from fastvit.files import atomic_path, write_json

#: (key, bytes, suffix, label)
Record = tuple[str, bytes, str, int]


@dataclass
class ShardsWritten:
    """What :func:`write_shards` wrote."""

    out_dir: Path
    classes: list[str]
    counts: dict[str, int]  # shard file name -> samples

    def total(self, split: str) -> int:
        return sum(n for name, n in self.counts.items() if name.startswith(f"{split}-"))


def _folder_records(split_dir: Path, classes: list[str]) -> list[tuple[str, Path, int]]:
    from fastvit.data.datasets import IMAGE_EXTENSIONS

    out = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                key = str(path.relative_to(split_dir).with_suffix("")).replace(".", "_")
                out.append((key, path, label))
    return out


def _folder_splits(source: Path) -> tuple[list[str], dict[str, Callable[[int], Record]],
                                          dict[str, int]]:
    train_dir = find_split(source, "train")
    classes = list_class_dirs(train_dir)
    splits: dict[str, Callable[[int], Record]] = {}
    sizes: dict[str, int] = {}
    for split in ("train", "val"):
        if split == "val" and not has_split(source, "val"):
            continue
        items = _folder_records(find_split(source, split), classes)

        def record(index: int, items: list = items) -> Record:
            key, path, label = items[index]
            return key, path.read_bytes(), path.suffix.lstrip(".").lower(), label

        splits[split], sizes[split] = record, len(items)
    return classes, splits, sizes


def _hf_splits(source: Path) -> tuple[list[str], dict[str, Callable[[int], Record]],
                                      dict[str, int]]:
    from fastvit.data.hf_datasets import open_hf_split

    splits, sizes, classes = {}, {}, None
    for split in ("train", "val"):
        data = open_hf_split(str(source), split, transform=None, bad_images="skip")
        if data is None:
            continue
        classes = classes or data.classes

        def record(index: int, data: Any = data) -> Record:
            return (f"{index:08d}", *data.encoded(index))

        splits[split], sizes[split] = record, len(data)
    return list(classes or []), splits, sizes


def write_shards(source: str | Path, out_dir: str | Path, *, shard_size: int = 1000,
                 seed: int = 0, progress: bool = True) -> ShardsWritten:
    """Write ``source`` (ImageFolder or ``save_to_disk`` folder) as ``OUT/{train,val}-NNNNNN.tar``
    of at most ``shard_size`` samples, plus ``OUT/shards.json``."""
    from fastvit.data.hf_datasets import is_saved_dataset, parquet_files

    if shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {shard_size}")
    source, out_dir = Path(source), Path(out_dir)
    if not source.is_dir():
        raise DataError(f"{source} is not a folder")
    if is_saved_dataset(source) or parquet_files(source):
        classes, splits, sizes = _hf_splits(source)
    else:
        classes, splits, sizes = _folder_splits(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split, records in splits.items():
        order = list(range(sizes[split]))
        if split == "train":
            random.Random(seed).shuffle(order)
        counts.update(_write_split(records, order, out_dir, split, shard_size, progress))
    write_json(out_dir / SHARDS_JSON, {"classes": classes, "counts": counts,
                                       "source": str(source)})
    return ShardsWritten(out_dir, classes, counts)


def _write_split(record: Callable[[int], Record], order: list[int], out_dir: Path,
                 split: str, shard_size: int, progress: bool) -> dict[str, int]:
    """Write one split's records in ``order``, ``shard_size`` to a shard."""
    wds_writer = require("webdataset.writer", "fastvit shards", extra="data")
    counts: dict[str, int] = {}
    bar = _bar(len(order), f"{split} shards", progress)
    for number, start in enumerate(range(0, len(order), shard_size)):
        name = f"{split}-{number:06d}.tar"
        chunk = order[start:start + shard_size]
        _write_one(wds_writer, out_dir / name, [record(i) for i in chunk])
        counts[name] = len(chunk)
        bar.update(len(chunk))
    bar.close()
    return counts


def _write_one(wds_writer: Any, path: Path, samples: list[Record]) -> None:
    with atomic_path(path) as tmp:
        buffer = io.BytesIO()
        with wds_writer.TarWriter(buffer, encoder=False, mtime=0) as sink:
            for key, data, suffix, label in samples:
                sink.write({"__key__": key, suffix or "jpg": data,
                            "cls": str(label).encode()})
        tmp.write_bytes(buffer.getvalue())


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="img", leave=False)
