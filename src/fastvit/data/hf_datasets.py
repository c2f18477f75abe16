"""Hugging Face ``datasets``: a ``save_to_disk`` folder, Parquet files or ``hf:ORG/NAME``.

The rows are Arrow records (memory-mapped, so DataLoader workers share them);
the image column (a ``datasets.Image`` feature, else a column named ``image`` or
``img``) is read as encoded bytes and decoded by the folders' decoders, the label
column is the ``ClassLabel`` feature (its names are the class names). Splits:
``train``, and ``validation`` / ``val`` / ``test`` for evaluation (the first one
present). ``hf:ORG/NAME`` goes through the Hub cache (``HF_HUB_OFFLINE=1``: only
the cache).
"""

from __future__ import annotations

import functools
import glob
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from fastvit.data.datasets import BAD_IMAGE_MODES, BadSample, read_sample
from fastvit.data.decode import decode_bytes
from fastvit.errors import DataError
from fastvit.extras import require

HUB_PREFIX = "hf:"
VAL_SPLITS = ("validation", "val", "test")
IMAGE_COLUMNS = ("image", "img", "jpg", "png")
LABEL_COLUMNS = ("label", "labels", "cls", "fine_label")


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by ``Dataset(Dict).save_to_disk``."""
    path = Path(path)
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def parquet_files(path: str | Path) -> list[str]:
    """The Parquet files of ``path``: the file itself, or those of a folder up to two
    levels down (``train-*.parquet``, ``data/train-*.parquet``, ``train/*.parquet``), so
    that an ImageFolder of a million files is never walked to find out."""
    path = Path(path)
    if path.is_file():
        return [str(path)] if path.suffix == ".parquet" else []
    if not path.is_dir():
        return []
    return sorted(f for depth in ("*.parquet", "*/*.parquet", "data/*/*.parquet")
                  for f in glob.glob(str(path / depth)))


def _split_of(file: str, root: Path) -> str:
    """``train`` / ``validation`` / ... from a Parquet file's folder or name."""
    parts = Path(file).relative_to(root).parts if root.is_dir() else (Path(file).name,)
    for part in reversed(parts):
        name = part.split(".")[0].lower()
        for split in ("train", *VAL_SPLITS):
            if name == split or name.startswith(f"{split}-") or name.startswith(f"{split}_"):
                return split
    return "train"


def load_dataset_dict(value: str, *, cache_dir: str | None = None) -> dict[str, Any]:
    """``{split: datasets.Dataset}`` of a saved folder, Parquet files or ``hf:ORG/NAME``."""
    datasets = require("datasets", "Hugging Face datasets", extra="data")
    if value.startswith(HUB_PREFIX):
        name = value[len(HUB_PREFIX):]
        try:
            loaded = datasets.load_dataset(name, cache_dir=cache_dir)
        except (OSError, ValueError, ConnectionError, FileNotFoundError) as err:
            from huggingface_hub import constants

            offline = " (HF_HUB_OFFLINE=1: only the local cache is read)" if \
                constants.HF_HUB_OFFLINE else ""
            raise DataError(f"cannot load {value} from the Hugging Face Hub{offline}: "
                            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                            ) from None
        return _as_dict(loaded, value)
    if is_saved_dataset(value):
        try:
            return _as_dict(datasets.load_from_disk(value), value)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read the datasets folder {value}: {err}") from None
    files = parquet_files(value)
    if not files:
        raise DataError(f"{value} is neither a datasets folder (save_to_disk) nor Parquet files")
    root = Path(value)
    by_split: dict[str, list[str]] = {}
    for file in files:
        by_split.setdefault(_split_of(file, root), []).append(file)
    try:
        loaded = datasets.load_dataset("parquet", data_files=by_split, cache_dir=cache_dir)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the Parquet files of {value}: {err}") from None
    return _as_dict(loaded, value)


def _as_dict(loaded: Any, value: str) -> dict[str, Any]:
    if hasattr(loaded, "keys"):
        return {str(k): loaded[k] for k in loaded}
    return {"train": loaded}


def pick_split(splits: dict[str, Any], split: str, value: str) -> Any | None:
    """The ``train`` split, or for ``val`` the first of validation / val / test (or None)."""
    names = ("train",) if split == "train" else VAL_SPLITS
    for name in names:
        if name in splits:
            return splits[name]
    if split == "train":
        raise DataError(f"{value} has no train split (it has: {', '.join(splits)})")
    return None


def image_and_label_columns(features: Any, value: str) -> tuple[str, str, list[str]]:
    """``(image column, label column, class names)`` from a split's features."""
    datasets = require("datasets", "Hugging Face datasets", extra="data")
    image = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    image = image or next((k for k in IMAGE_COLUMNS if k in features), None)
    label = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if image is None:
        raise DataError(f"{value} has no image column (an Image feature or one of "
                        f"{', '.join(IMAGE_COLUMNS)}); columns: {', '.join(features)}")
    if label is None:
        plain = next((k for k in LABEL_COLUMNS if k in features), None)
        raise DataError(f"{value} has no ClassLabel column (class names come from it)"
                        + (f"; {plain!r} is a plain column: cast it with "
                           f"dataset.cast_column({plain!r}, ClassLabel(names=[...]))"
                           if plain else f"; columns: {', '.join(features)}"))
    return image, label, list(features[label].names)


class HFImageDataset(Dataset):
    """A ``datasets.Dataset`` split as ``(transform(uint8 RGB), label)`` items; unreadable
    images become :class:`BadSample` markers named ``SOURCE[split]#row``.

    The DataLoader fetches a batch through :meth:`__getitems__`: one Arrow read of the
    image column for all its rows (a row read costs more than decoding a small image);
    the labels are the label column, read once."""

    def __init__(self, table: Any, *, name: str, transform: Callable | None = None,
                 bad_images: str = "skip") -> None:
        if bad_images not in BAD_IMAGE_MODES:
            raise DataError(f"bad_images must be one of {BAD_IMAGE_MODES}, got {bad_images!r}")
        datasets = require("datasets", "Hugging Face datasets", extra="data")
        self.image_column, self.label_column, self.classes = image_and_label_columns(
            table.features, name)
        if isinstance(table.features[self.image_column], datasets.Image):
            table = table.cast_column(self.image_column, datasets.Image(decode=False))
        self.table, self.name = table, name
        self.images = table.select_columns([self.image_column])
        self.transform, self.bad_images = transform, bad_images
        self._targets: list[int] | None = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def targets(self) -> list[int]:
        """Every row's label (one column read)."""
        if self._targets is None:
            self._targets = [int(t) for t in self.table[self.label_column]]
        return self._targets

    def row_name(self, index: int) -> str:
        """``SOURCE[split]#ROW``: how row ``index`` is listed in ``skipped_images.txt``."""
        return f"{self.name}#{index}"

    def encoded(self, index: int) -> tuple[bytes, str, int]:
        """``(image bytes, file suffix, label)`` of row ``index`` (nothing decoded)."""
        data, suffix = _cell_bytes(self.images[index][self.image_column])
        return data, suffix, self.targets[index]

    def __getitem__(self, index: int) -> tuple[Any, int] | BadSample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int] | BadSample]:
        """The items of ``indices`` (the DataLoader's batched fetch)."""
        return [reader() for reader in self.readers(indices)]

    def readers(self, indices: list[int]) -> list[Callable[[], tuple[Any, int] | BadSample]]:
        """One call per row that decodes and transforms it, its bytes read for all rows at
        once (the RNGs of a row's augmentation can be set around its call)."""
        cells = self.images[list(indices)][self.image_column] if len(indices) else []
        targets = self.targets
        return [functools.partial(self._read, index, cell, targets[index])
                for index, cell in zip(indices, cells, strict=True)]

    def _read(self, index: int, cell: Any, label: int) -> tuple[Any, int] | BadSample:
        return read_sample(functools.partial(self.row_name, index),
                           lambda: decode_bytes(_cell_bytes(cell)[0]), label, self.transform,
                           self.bad_images, "rows")


def _cell_bytes(cell: Any) -> tuple[bytes, str]:
    """``(encoded bytes, file suffix)`` of an image cell (``{"bytes", "path"}`` or bytes)."""
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if data is None and path:
            data = Path(path).read_bytes()
        suffix = Path(path).suffix.lstrip(".").lower() if path else ""
    else:
        data, suffix = cell, ""
    return data or b"", suffix or _sniff(data or b"")


def _sniff(data: bytes) -> str:
    """The file suffix of encoded image bytes."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:3] == b"GIF":
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    return "png"


def open_hf_split(value: str, split: str, *, transform: Callable | None, bad_images: str,
                  splits: dict[str, Any] | None = None) -> HFImageDataset | None:
    """Split ``split`` (``train`` / ``val``) of ``value``, or None for a missing val split."""
    splits = splits if splits is not None else load_dataset_dict(value)
    table = pick_split(splits, split, value)
    if table is None:
        return None
    label = next(name for name, t in splits.items() if t is table)
    return HFImageDataset(table, name=f"{value}[{label}]", transform=transform,
                          bad_images=bad_images)
