"""Where WebDataset shards are and what they hold: local paths, brace patterns, fsspec URLs,
``shards.json`` (class names, per-shard sample counts) or ``classes.txt``."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

from fastvit.errors import DataError
from fastvit.extras import require

SHARDS_JSON = "shards.json"
CLASS_FILES = ("classes.txt", "classes.json")
SPLIT_PREFIXES = {"train": ("train",), "val": ("val", "validation")}


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def expand_pattern(pattern: str) -> list[str]:
    """``train-{000000..000009}.tar`` -> the listed names (braceexpand, a webdataset need)."""
    braceexpand = require("braceexpand", "WebDataset shards", extra="data")
    return list(braceexpand.braceexpand(pattern))


def looks_like_shards(value: str) -> bool:
    """Whether ``value`` names shards: a brace pattern / ``.tar`` URL or a folder of ``*.tar``."""
    if value.endswith(".tar") or ("{" in value and ".." in value):
        return True
    path = Path(value)
    return path.is_dir() and (bool(glob.glob(str(path / "train*.tar")))
                              or (path / SHARDS_JSON).is_file())


def _fs(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path in it."""
    fsspec = require("fsspec", "shards behind a URL", extra="data")
    return fsspec.core.url_to_fs(url)


def _exists(url: str) -> bool:
    if is_remote(url):
        fs, path = _fs(url)
        return fs.isfile(path)
    return Path(url.removeprefix("file://")).is_file()


def _glob(folder: str, pattern: str) -> list[str]:
    """Sorted files matching ``folder/pattern`` (local, or any fsspec URL)."""
    if is_remote(folder):
        fs, path = _fs(folder)
        protocol = folder.split("://", 1)[0]
        return sorted(f"{protocol}://{p.split('://')[-1]}"
                      for p in fs.glob(f"{path.rstrip('/')}/{pattern}"))
    return sorted(glob.glob(str(Path(folder) / pattern)))


def find_shard_urls(value: str, split: str) -> list[str]:
    """The shard files of ``split`` in folder ``value``, or from a brace pattern of the
    train shards (the other splits: the pattern with ``train`` replaced, else every
    ``val-*.tar`` beside it, as val shards are usually fewer)."""
    if not ("{" in value or value.endswith(".tar")):
        for name in SPLIT_PREFIXES[split]:
            urls = _glob(value, f"{name}-*.tar")
            if urls:
                return urls
        raise DataError(f"no {split} shards in {value}: expected "
                        f"{' or '.join(f'{value}/{n}-*.tar' for n in SPLIT_PREFIXES[split])}")
    if split == "train":
        urls = expand_pattern(value) if "{" in value else [value]
        missing = [u for u in urls if not _exists(u)]
        if missing:
            raise DataError(f"{len(missing)} of the {len(urls)} shards of {value} do not exist "
                            f"(first: {missing[0]})")
        return urls
    head, _, tail = value.rpartition("/")
    for name in SPLIT_PREFIXES[split]:
        swapped = tail.replace("train", name, 1)
        if swapped == tail:
            continue
        pattern = f"{head}/{swapped}" if head else swapped
        urls = expand_pattern(pattern) if "{" in pattern else [pattern]
        if all(_exists(u) for u in urls):
            return urls
        found = _glob(head or ".", f"{name}-*.tar")
        if found:
            return found
    raise DataError(f"no {split} shards beside {value} (tried the pattern with 'train' "
                    f"replaced by {' / '.join(SPLIT_PREFIXES[split])}, and {split}-*.tar)")


def _folder_of(value: str) -> str:
    if "{" in value or value.endswith(".tar"):
        return value.rpartition("/")[0] or "."
    return value


def read_index(value: str) -> dict[str, Any]:
    """``shards.json`` beside the shards (class names, per-shard counts), or ``{}``."""
    folder = _folder_of(value)
    path = f"{folder}/{SHARDS_JSON}"
    try:
        text = open_url(path).read().decode() if is_remote(path) else Path(path).read_text()
    except (OSError, FileNotFoundError):
        return {}
    try:
        return json.loads(text)
    except ValueError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None


def read_class_names(value: str, index: dict[str, Any]) -> list[str] | None:
    """Class names from ``shards.json``, else ``classes.txt`` (one a line) / ``classes.json``."""
    if index.get("classes"):
        return [str(c) for c in index["classes"]]
    folder = Path(_folder_of(value))
    for name in CLASS_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith(".json"):
                return [str(c) for c in json.loads(path.read_text())]
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def open_url(url: str) -> Any:
    """A binary stream of a local path or an fsspec URL."""
    if is_remote(url):
        fsspec = require("fsspec", "shards behind a URL", extra="data")
        return fsspec.open(url, "rb").open()
    return open(url.removeprefix("file://"), "rb")
