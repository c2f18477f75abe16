"""What the caches hold, filling them ahead of time, and checking them.

For clusters without internet: ``fastvit weights download`` on a machine with
network access (with ``FASTVIT_CACHE=DIR`` or ``--cache-dir DIR`` everything
lands in one folder), copy the folder, set ``FASTVIT_CACHE=DIR`` and
``HF_HUB_OFFLINE=1`` there. ``fastvit weights verify`` re-hashes every cached
file: URL downloads against the sha256 recorded when they were fetched (and the
registry's, where known), Hub files against their content address (the
Hugging Face cache names large files by their sha256).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fastvit.errors import ConfigError
from fastvit.models import VARIANTS
from fastvit.weights.download import (
    hub_available,
    hub_cache_dir,
    recorded_sha256,
    sha256_of,
    url_cache_dir,
)
from fastvit.weights.registry import KNOWN_SHA256, list_weights, official_weights
from fastvit.weights.resolve import (
    cached_official,
    config_architecture,
    fetch_official,
    is_remote,
    resolve_weights,
)

PathLike = str | os.PathLike
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIDE_FILES = (".sha256", ".lock", ".tmp", ".incomplete")


def weights_table(variants: list[str] | None = None, tags: list[str] | None = None, *,
                  cache_dir: PathLike | None = None, family: str = "all"
                  ) -> list[dict[str, Any]]:
    """One row per published set of weights: tag, form, top-1 (None for CLIP weights),
    sources, cached copy; ``variants`` default to every one of ``family``."""
    rows = []
    for weights in list_weights(variants, tags, family):
        cached = cached_official(weights, cache_dir)
        rows.append({"name": weights.name, "variant": weights.variant, "tag": weights.tag,
                     "form": weights.form, "distilled": weights.distilled,
                     "top1": weights.top1, "hf_hub_id": weights.hf_hub_id,
                     "url": weights.url(), "cached": str(cached) if cached else None})
    return rows


def download_weights(specs: list[str], tags: list[str] | None = None, *,
                     cache_dir: PathLike | None = None, progress: bool | None = None
                     ) -> list[dict[str, Any]]:
    """Fetch into the cache: variants (``all``: every one) for each tag (default: each
    variant's default, ``in1k`` or an MCi tower's first CLIP tag), and ``hf-hub:`` ids or
    URLs given as is. One row per file."""
    variants = list(VARIANTS) if "all" in specs else [s for s in specs if s in VARIANTS]
    others = [s for s in specs if s not in VARIANTS and s != "all"]
    for spec in others:
        if not is_remote(spec):
            raise ConfigError(f"{spec!r} is neither a FastViT variant ({', '.join(VARIANTS)}, "
                              f"all) nor an hf-hub:ORG/NAME id or URL")
    if not specs:
        raise ConfigError("name what to download: variants (or all), hf-hub ids or URLs")
    rows = []
    chosen = (list_weights(variants, tags) if tags else
              [official_weights(v, True) for v in variants])
    for weights in chosen:
        resolved = fetch_official(weights, cache_dir=cache_dir, progress=progress)
        rows.append(_row(weights.name, resolved.source, resolved.path))
    for spec in others:
        resolved = resolve_weights(spec, cache_dir=cache_dir, progress=progress)
        rows.append(_row(spec, resolved.source, resolved.path))
    return rows


def _row(name: str, source: str, path: Path) -> dict[str, Any]:
    return {"name": name, "source": source, "path": str(path),
            "bytes": Path(path).stat().st_size}


def verify_cache(cache_dir: PathLike | None = None) -> list[dict[str, Any]]:
    """Re-hash every cached FastViT weights file. ``status``: ``ok``, ``mismatch``
    (the file changed since it was fetched: delete it and download again),
    ``unrecorded`` (no hash to compare with) or ``leftover`` (a temporary file of
    an interrupted download, never used)."""
    rows = [_check_url_file(path, root)
            for root in [url_cache_dir(cache_dir)] if root.is_dir()
            for path in sorted(root.rglob("*")) if path.is_file()]
    rows = [r for r in rows if r is not None]
    if hub_available():
        rows += _check_hub_cache(hub_cache_dir(cache_dir))
    return rows


def _check_url_file(path: Path, root: Path) -> dict[str, Any] | None:
    if path.name.endswith((".sha256", ".lock")):
        return None
    if path.name.startswith(".") and path.name.endswith(".tmp"):
        return {"path": str(path), "status": "leftover", "detail": "temporary file of an "
                "interrupted download (safe to delete)"}
    digest = sha256_of(path)
    expected = KNOWN_SHA256.get(path.relative_to(root).as_posix()) or recorded_sha256(path)
    if expected is None:
        return {"path": str(path), "status": "unrecorded", "sha256": digest,
                "detail": "no recorded sha256 (not fetched by fastvit)"}
    status = "ok" if digest == expected else "mismatch"
    return {"path": str(path), "status": status, "sha256": digest,
            "detail": "" if status == "ok" else f"expected {expected}"}


def _check_hub_cache(cache: Path) -> list[dict[str, Any]]:
    """Hash the blobs of cached FastViT repositories (official ones, or any whose
    config.json names a FastViT variant) against their sha256 file names."""
    if not cache.is_dir():
        return []
    official = {w.hf_hub_id for w in list_weights(family="all") if w.hf_hub_id}
    rows = []
    for repo_dir in sorted(cache.glob("models--*")):
        repo_id = repo_dir.name[len("models--"):].replace("--", "/", 1)
        if repo_id not in official and not _is_fastvit_repo(repo_dir):
            continue
        for blob in sorted((repo_dir / "blobs").glob("*")):
            if blob.name.endswith(".incomplete"):
                rows.append({"path": str(blob), "status": "leftover",
                             "detail": "interrupted Hub download (safe to delete)"})
            elif _SHA256.match(blob.name):
                digest = sha256_of(blob)
                status = "ok" if digest == blob.name else "mismatch"
                rows.append({"path": str(blob), "repo": repo_id, "status": status,
                             "sha256": digest,
                             "detail": "" if status == "ok" else f"expected {blob.name}"})
    return rows


def _is_fastvit_repo(repo_dir: Path) -> bool:
    for config in repo_dir.glob("snapshots/*/config.json"):
        try:
            if config_architecture(json.loads(config.read_text())) in VARIANTS:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False
