"""ImageNet robustness sets: label maps, folder discovery and the ImageNet-C metrics.

* ImageNet-1k class ``i`` is the ``i``-th sorted WordNet id (a sorted ``train/``
  folder); ``assets/imagenet_wnids.txt`` ships that list.
* ImageNet-A and ImageNet-R hold 200 of those classes; the benchmark restricts
  the logits to the 200 (``assets/imagenet_{a,r}_wnids.txt``).
* ImageNet-Sketch holds all 1000 classes: plain top-1.
* ImageNet-C: ``<corruption>/<severity 1-5>/<wnid>/*.JPEG``. The corruption
  error of a model on corruption ``c`` is ``CE_c = sum_s E_{s,c} / sum_s A_{s,c}``
  with ``A`` AlexNet's top-1 errors; mCE is the mean CE over the 15 benchmark
  corruptions, in percent. The relative CE subtracts each network's clean error
  first: ``sum_s (E_{s,c} - E_clean) / sum_s (A_{s,c} - A_clean)``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastvit.data.datasets import list_class_dirs
from fastvit.errors import ConfigError, DataError

SEVERITIES = (1, 2, 3, 4, 5)
ROBUSTNESS_SETS = ("imagenet-a", "imagenet-r", "sketch", "imagenet-c")
_ALIASES = {"a": "imagenet-a", "r": "imagenet-r", "imagenet-sketch": "sketch",
            "c": "imagenet-c"}


def _asset_text(name: str) -> str:
    return resources.files("fastvit").joinpath("assets", name).read_text()


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    return tuple(_asset_text("imagenet_wnids.txt").split())


@functools.cache
def subset_wnids(name: str) -> tuple[str, ...]:
    """The 200 wnids of ``"imagenet-a"`` or ``"imagenet-r"``."""
    files = {"imagenet-a": "imagenet_a_wnids.txt", "imagenet-r": "imagenet_r_wnids.txt"}
    return tuple(_asset_text(files[name]).split())


def wnid_to_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def class_folders(root: str | os.PathLike) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    return list_class_dirs(root)


def imagenet_class_map(root: str | os.PathLike, allowed: tuple[str, ...] | None = None
                       ) -> dict[str, int]:
    """``{wnid folder: ImageNet-1k index}`` for the class folders of ``root``.

    Every folder must be an ImageNet wnid (and in ``allowed`` when given).
    """
    folders = class_folders(root)
    if not folders:
        raise DataError(f"no class folders in {root}: expected {root}/<wnid>/<images>")
    index = wnid_to_index()
    known = set(allowed) if allowed is not None else set(index)
    unknown = [f for f in folders if f not in known]
    if unknown:
        what = "the benchmark's class list" if allowed is not None else "ImageNet-1k wnids"
        shown = ", ".join(unknown[:6]) + (" ..." if len(unknown) > 6 else "")
        raise DataError(f"{root}: {len(unknown)} class folder(s) not in {what}: {shown}")
    return {f: index[f] for f in folders}


def subset_class_indices(name: str) -> list[int]:
    """ImageNet-1k indices of ImageNet-A/R's 200 classes, ascending."""
    index = wnid_to_index()
    return sorted(index[w] for w in subset_wnids(name))


def parse_robustness_spec(spec: str) -> dict[str, Path]:
    """``"imagenet-a=DIR,imagenet-c=DIR"`` -> ``{"imagenet-a": Path(DIR), ...}``."""
    out: dict[str, Path] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in item:
            raise ConfigError(f"--robustness item {item!r} is not NAME=DIR "
                              f"(names: {', '.join(ROBUSTNESS_SETS)})")
        name, folder = (s.strip() for s in item.split("=", 1))
        name = _ALIASES.get(name.lower(), name.lower())
        if name not in ROBUSTNESS_SETS:
            raise ConfigError(f"unknown robustness set {name!r}; choose from "
                              f"{', '.join(ROBUSTNESS_SETS)}")
        if not Path(folder).is_dir():
            raise DataError(f"{name} folder {folder} does not exist")
        out[name] = Path(folder)
    if not out:
        raise ConfigError("--robustness is empty")
    return out


# -- ImageNet-C ----------------------------------------------------------------------------------


def find_imagenet_c(root: str | os.PathLike) -> dict[str, dict[int, Path]]:
    """``{corruption: {severity: folder}}`` under ``root``.

    Accepts the flat layout ``root/<corruption>/<1-5>/`` and the release's grouped
    one ``root/<group>/<corruption>/<1-5>/`` (noise, blur, weather, digital, extra).
    """
    root = Path(root)
    found: dict[str, dict[int, Path]] = {}

    def severities(folder: Path) -> dict[int, Path]:
        return {int(e.name): Path(e.path) for e in os.scandir(folder)
                if e.is_dir() and e.name.isdigit() and int(e.name) in SEVERITIES}

    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        levels = severities(Path(entry.path))
        if levels:
            found[entry.name] = levels
            continue
        for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if sub.is_dir() and (levels := severities(Path(sub.path))):
                found[sub.name] = levels
    if not found:
        raise DataError(f"no ImageNet-C corruptions in {root}: expected "
                        f"{root}/<corruption>/<severity 1-5>/<wnid>/<images>")
    return found


@dataclass(frozen=True)
class CorruptionNormalizer:
    """AlexNet's errors per corruption and severity (fractions), and its clean error."""

    errors: dict[str, tuple[float, ...]]
    benchmark: tuple[str, ...]
    clean_error: float | None = None
    source: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "table") -> CorruptionNormalizer:
        try:
            errors = {c: tuple(float(v) for v in vals) for c, vals in data["errors"].items()}
            bench = tuple(data.get("benchmark_corruptions", errors))
            clean = data.get("clean_error")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"{where}: expected {{'errors': {{corruption: [5 errors]}}, "
                              f"'benchmark_corruptions': [...], 'clean_error': x}} ({err})"
                              ) from None
        bad = [c for c, v in errors.items() if len(v) != len(SEVERITIES)]
        if bad:
            raise ConfigError(f"{where}: corruptions without 5 severities: {', '.join(bad)}")
        missing = [c for c in bench if c not in errors]
        if missing:
            raise ConfigError(f"{where}: benchmark corruptions without errors: {missing}")
        return cls(errors, bench, None if clean is None else float(clean),
                   str(data.get("source", where)))

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> CorruptionNormalizer:
        """The shipped AlexNet table, or a JSON file of the same shape."""
        if path is None:
            return cls.from_json(json.loads(_asset_text("imagenet_c_alexnet.json")),
                                 "assets/imagenet_c_alexnet.json")
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read normalizer table {path}: {err}") from None
        return cls.from_json(data, str(path))


def corruption_summary(errors: Mapping[str, Mapping[int, float]],
                       normalizer: CorruptionNormalizer | None = None,
                       clean_error: float | None = None) -> dict[str, Any]:
    """CE per corruption, mCE and mean errors from top-1 errors (fractions) per severity.

    Returns percentages. ``mce`` is only set when all benchmark corruptions have all
    five severities (``mce_partial`` averages the complete ones otherwise);
    corruptions the normalizer does not know get only their unnormalized error.
    """
    norm = normalizer or CorruptionNormalizer.load()
    per: dict[str, dict[str, Any]] = {}
    for name in sorted(errors):
        sev = {int(s): float(e) for s, e in errors[name].items()}
        row: dict[str, Any] = {"errors": {str(s): 100 * e for s, e in sorted(sev.items())},
                               "mean_error": 100 * sum(sev.values()) / len(sev),
                               "complete": set(sev) == set(SEVERITIES)}
        ref = norm.errors.get(name)
        if ref is not None:
            levels = sorted(sev)
            row["ce"] = 100 * sum(sev[s] for s in levels) / sum(ref[s - 1] for s in levels)
            if clean_error is not None and norm.clean_error is not None:
                denom = sum(ref[s - 1] - norm.clean_error for s in levels)
                row["relative_ce"] = 100 * sum(sev[s] - clean_error for s in levels) / denom
        per[name] = row
    complete = [c for c in norm.benchmark if c in per and per[c]["complete"]]
    missing = [c for c in norm.benchmark if c not in complete]
    summary: dict[str, Any] = {"corruptions": per, "missing_benchmark_corruptions": missing,
                               "normalizer": norm.source}

    def mean(key: str, names: list[str]) -> float | None:
        values = [per[c][key] for c in names if key in per[c]]
        return sum(values) / len(values) if values and len(values) == len(names) else None

    if complete:
        summary["mce" if not missing else "mce_partial"] = mean("ce", complete)
        summary["mean_error"] = mean("mean_error", complete)
        rel = mean("relative_ce", complete)
        if rel is not None:
            summary["relative_mce" if not missing else "relative_mce_partial"] = rel
    return summary
