"""Turning what a user wrote for weights into a local file.

``pretrained`` / ``--pretrained`` accepts:

* ``True`` or a tag (``in1k``, ``dist_in1k``, ``in1k_reparam``,
  ``dist_in1k_reparam``; timm's ``apple_in1k`` too): the official weights of the
  variant, found in the caches first, else fetched from the Hugging Face Hub
  (timm's copy), else from the official release's URL;
* a local file (any layout :func:`fastvit.read_checkpoint` reads) or a folder
  written by :func:`fastvit.save_pretrained` / timm (``config.json`` +
  ``model.safetensors``);
* an ``http(s)://`` URL (downloaded once into the cache);
* ``hf-hub:ORG/REPO[@REVISION]``: a timm-style Hub repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fastvit.errors import CheckpointError, ConfigError
from fastvit.models import VARIANTS
from fastvit.weights.download import (
    WeightsError,
    WeightsNotCached,
    cached_hub_file,
    download_url,
    hub_available,
    hub_cache_dir,
    hub_download,
    is_offline,
    url_cache_dir,
)
from fastvit.weights.registry import (
    HF_WEIGHTS_FILE,
    OFFICIAL_URL_BASE,
    OfficialWeights,
    is_tag,
    official_weights,
)

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
_WNID = re.compile(r"^n\d{8}$")
WEIGHT_FILES = (HF_WEIGHTS_FILE, "pytorch_model.bin", "model.pth", "model.pth.tar")
# pretrained_cfg keys that describe preprocessing: a folder's config.json sets them
PREPROCESSING_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std",
                      "test_input_size", "test_crop_pct")


@dataclass
class ResolvedWeights:
    """A weights file on disk and what is known about it before it is read.

    ``variant`` is what the source says it holds (registry entry or the folder's
    ``config.json``), ``config`` that ``config.json``, ``pretrained_cfg`` the keys
    to set on the model's ``pretrained_cfg``, ``class_names`` the label names the
    source gives (ImageNet's for official weights).
    """

    path: Path
    source: str
    variant: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    official: OfficialWeights | None = None


def is_remote(spec: object) -> bool:
    """A tag, a URL or a Hub id (something to fetch), not a local path."""
    return is_tag(spec) or (isinstance(spec, str) and (
        spec.startswith(HUB_PREFIX) or urlparse(spec).scheme in ("http", "https")))


def resolve_weights(spec: str | os.PathLike | bool, variant: str | None = None, *,
                    cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                    url_base: str | None = None) -> ResolvedWeights:
    """The local file behind ``spec`` (see the module docstring), fetched if needed.

    ``variant`` is needed for a tag and checked against what a Hub repository or
    folder says it holds. ``cache_dir`` replaces the default caches
    (``$FASTVIT_CACHE``, torch.hub's and Hugging Face's); ``url_base`` a mirror of
    the official release's folder layout (default ``$FASTVIT_WEIGHTS_URL``).
    """
    if spec is False or spec is None:
        raise ConfigError("no weights given")
    if is_tag(spec):
        return fetch_official(official_weights(variant, spec), cache_dir=cache_dir,
                              progress=progress, url_base=url_base)
    text = os.fspath(spec)
    if text.startswith(HUB_PREFIX):
        return _checked(fetch_hub(text[len(HUB_PREFIX):], cache_dir=cache_dir), variant)
    if urlparse(text).scheme in ("http", "https"):
        return fetch_url(text, cache_dir=cache_dir, progress=progress)
    path = Path(text).expanduser()
    if path.is_dir():
        return _checked(read_folder(path), variant)
    if not path.exists():
        hint = ""
        if "/" not in text and "." not in text:
            hint = (" (not a weights tag either: in1k, dist_in1k, in1k_reparam, "
                    "dist_in1k_reparam; MCi: apple_mclip, apple_mclip2_dfndr2b)")
        raise CheckpointError(f"checkpoint not found: {path}{hint}")
    return ResolvedWeights(path, str(path), pretrained_cfg={"file": str(path)})


# ---------------------------------------------------------------------------
# The official weights
# ---------------------------------------------------------------------------


def official_cache_path(weights: OfficialWeights, cache_dir: str | os.PathLike | None = None
                        ) -> Path:
    """Where the official URL's file is kept (the release's folder layout)."""
    return url_cache_dir(cache_dir) / weights.url_path


def cached_official(weights: OfficialWeights, cache_dir: str | os.PathLike | None = None
                    ) -> Path | None:
    """A cached copy (Hub cache first, then the URL cache), without any network."""
    if weights.hf_hub_id and hub_available():
        found = cached_hub_file(weights.hf_hub_id, HF_WEIGHTS_FILE, cache_dir=cache_dir)
        if found is not None:
            return found
    path = official_cache_path(weights, cache_dir)
    return path if path.is_file() else None


def _official_result(weights: OfficialWeights, path: Path, origin: str) -> ResolvedWeights:
    return ResolvedWeights(path, f"{weights.name} ({origin})", weights.variant,
                           pretrained_cfg={**weights.pretrained_cfg(), "file": str(path)},
                           official=weights)  # class names: ImageNet's, via Loaded.labels


def _origin(weights: OfficialWeights, path: Path, url_base: str | None) -> str:
    if weights.hf_hub_id and path.name == HF_WEIGHTS_FILE:
        return f"{HUB_PREFIX}{weights.hf_hub_id}"
    return weights.url(url_base) or str(path)


def fetch_official(weights: OfficialWeights, *, cache_dir: str | os.PathLike | None = None,
                   progress: bool | None = None, url_base: str | None = None
                   ) -> ResolvedWeights:
    """The official weights: cached copy, else the Hub (timm's copy), else the URL."""
    cached = cached_official(weights, cache_dir)
    if cached is not None:
        return _official_result(weights, cached, _origin(weights, cached, url_base))
    url = weights.url(url_base)
    if is_offline():
        looked = [str(official_cache_path(weights, cache_dir))]
        if weights.hf_hub_id and hub_available():
            looked.insert(0, f"{HUB_PREFIX}{weights.hf_hub_id}/{HF_WEIGHTS_FILE} in "
                          f"{hub_cache_dir(cache_dir)}")
        raise WeightsNotCached(f"offline (HF_HUB_OFFLINE=1) and the {weights.name} weights "
                               f"are not cached (looked for {' and '.join(looked)}); run "
                               f"`fastvit weights download {weights.variant} --tag "
                               f"{weights.tag}` on a machine with network access and copy "
                               f"the cache")
    hub_failure = None
    if weights.hf_hub_id and hub_available():
        try:
            path = hub_download(weights.hf_hub_id, HF_WEIGHTS_FILE, cache_dir=cache_dir)
            return _official_result(weights, path, f"{HUB_PREFIX}{weights.hf_hub_id}")
        except WeightsError as err:
            hub_failure = err
            log.warning("%s; trying the official URL", err)
    elif weights.hf_hub_id:
        log.info("huggingface_hub is not installed: fetching %s from the official URL",
                 weights.name)
    if url is None:  # on the Hub only (MobileCLIP2 towers)
        raise hub_failure or WeightsError(f"{weights.name} is published on the Hugging Face "
                                          f"Hub only ({HUB_PREFIX}{weights.hf_hub_id}): "
                                          f"install huggingface_hub")
    try:
        path = download_url(url, official_cache_path(weights, cache_dir), sha256=weights.sha256,
                            progress=progress)
    except WeightsError as err:
        if hub_failure is not None:
            raise WeightsError(f"{hub_failure}; and {err}") from None
        raise
    return _official_result(weights, path, url)


# ---------------------------------------------------------------------------
# URLs, Hub repositories, folders
# ---------------------------------------------------------------------------


def url_cache_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache path of a URL: the release's layout for official URLs, else a folder per URL."""
    official = OFFICIAL_URL_BASE + "/"
    if url.startswith(official):
        return url_cache_dir(cache_dir) / url[len(official):]
    name = Path(urlparse(url).path).name or "weights"
    return url_cache_dir(cache_dir) / "urls" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch_url(url: str, *, cache_dir: str | os.PathLike | None = None,
              progress: bool | None = None) -> ResolvedWeights:
    path = download_url(url, url_cache_path(url, cache_dir), progress=progress)
    return ResolvedWeights(path, url, pretrained_cfg={"url": url, "file": str(path)})


def split_hub_id(hub_id: str) -> tuple[str, str | None]:
    """``ORG/REPO@REV`` -> (``ORG/REPO``, ``REV``)."""
    repo, _, revision = hub_id.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"not a Hub repository id: {HUB_PREFIX}{hub_id} (expected "
                          f"{HUB_PREFIX}ORG/NAME[@REVISION])")
    return repo, revision or None


def fetch_hub(hub_id: str, *, cache_dir: str | os.PathLike | None = None) -> ResolvedWeights:
    """The weights (and ``config.json``) of a timm-style Hub repository."""
    repo, revision = split_hub_id(hub_id)
    config_file = hub_download(repo, "config.json", revision=revision, cache_dir=cache_dir,
                               missing_ok=True)
    config = read_config_json(config_file) if config_file else {}
    source = f"{HUB_PREFIX}{hub_id}"
    for name in WEIGHT_FILES:
        path = hub_download(repo, name, revision=revision, cache_dir=cache_dir, missing_ok=True)
        if path is not None:
            extra = {"hf_hub_id": repo, "file": str(path)}
            return _from_config(path, source, config, extra)
    raise WeightsError(f"{source} has none of the weight files {', '.join(WEIGHT_FILES)}"
                       + (" in the offline cache" if is_offline() else ""))


def read_folder(folder: Path) -> ResolvedWeights:
    """A folder written by :func:`fastvit.save_pretrained` or timm (``config.json`` +
    weights)."""
    config_path = folder / "config.json"
    config = read_config_json(config_path) if config_path.is_file() else {}
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return _from_config(folder / name, str(folder), config, {"file": str(folder)})
    raise CheckpointError(f"{folder} is a folder without weights: expected one of "
                          f"{', '.join(WEIGHT_FILES)}")


def read_config_json(path: Path) -> dict[str, Any]:
    """A timm / save_pretrained ``config.json`` as a dict (unreadable: CheckpointError)."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return config


def config_architecture(config: dict[str, Any]) -> str | None:
    """The variant a timm ``config.json`` names (``fastvit_t8.apple_in1k`` -> fastvit_t8)."""
    arch = config.get("architecture")
    if arch is None and isinstance(config.get("pretrained_cfg"), dict):
        arch = config["pretrained_cfg"].get("architecture")
    return str(arch).split(".")[0] if arch else None


def config_class_names(config: dict[str, Any]) -> list[str] | None:
    """``label_names`` of a config, the names the classes were trained under (folder names
    for :func:`fastvit.save_pretrained`). ImageNet-1k's synsets give None: the default
    ImageNet names apply, and ImageNet's wnid folders still map onto the classes."""
    names = config.get("label_names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list):
        return None
    if len(names) == 1000 and all(_WNID.match(str(n)) for n in names):
        return None
    return [str(n) for n in names]


def _from_config(path: Path, source: str, config: dict[str, Any], extra: dict[str, Any]
                 ) -> ResolvedWeights:
    arch = config_architecture(config)
    if config and arch not in VARIANTS:
        raise CheckpointError(f"{source} holds a {arch or 'model of unknown architecture'}, "
                              f"not a FastViT (config.json architecture)")
    cfg = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    overlay = {k: tuple(v) if isinstance(v, list) else v
               for k, v in cfg.items() if k in PREPROCESSING_KEYS}
    for key in ("tag", "license"):
        if cfg.get(key):
            overlay[key] = cfg[key]
    return ResolvedWeights(path, source, arch, config, {**overlay, **extra},
                           config_class_names(config))


def _checked(resolved: ResolvedWeights, variant: str | None) -> ResolvedWeights:
    if variant and resolved.variant and resolved.variant != variant:
        raise CheckpointError(f"{resolved.source} holds {resolved.variant} weights, not "
                              f"{variant}: use --model {resolved.variant} (or omit --model)")
    return resolved
