"""Where a CLIP model's weights come from: an open_clip whole-model file.

``--checkpoint FILE`` is such a file on disk (safetensors, ``.bin``, ``.pt``; a
DDP ``module.`` prefix is fine). ``--pretrained`` names published weights:

* open_clip's tag of the model (``dfndr2b`` for MobileCLIP2, ``datacompdr`` for
  MobileCLIP), or our registry's tag for the same release (``apple_mclip2_dfndr2b``,
  ``apple_mclip``): the whole model from open_clip's Hub repository
  (:data:`fastvit.clip.models.CLIP_MODELS`), through the Hugging Face cache;
  ``HF_HUB_OFFLINE=1`` reads the cache only;
* ``hf-hub:ORG/REPO``: another open_clip-style repository (``open_clip_model.safetensors``
  or ``open_clip_pytorch_model.bin``);
* anything else :func:`fastvit.resolve_weights` resolves (a file, a URL; for image-only
  work also a registry tag such as ``apple_mclip``, whose files hold the image tower alone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastvit.clip.models import OPEN_CLIP_FILES, OPEN_CLIP_TAGS, REGISTRY_TAGS, clip_spec
from fastvit.errors import CheckpointError, ConfigError
from fastvit.weights import (
    HUB_PREFIX,
    WeightsError,
    WeightsNotCached,
    hub_cache_dir,
    hub_download,
    resolve_weights,
)
from fastvit.weights.registry import is_tag
from fastvit.weights.resolve import split_hub_id

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ClipWeights:
    """A weights file on disk; ``source`` says where it came from (for messages and
    metadata), ``spec`` is what the user wrote, ``registry_tag`` our tag of the same
    image-tower weights (its preprocessing), when known."""

    path: Path
    source: str
    spec: str
    registry_tag: str | None = None


def resolve_clip_weights(name: str, checkpoint: PathLike | None = None,
                         pretrained: str | None = None, *, text: bool = True,
                         cache_dir: PathLike | None = None) -> ClipWeights:
    """The local file of ``checkpoint`` or ``pretrained`` (exactly one) for CLIP model
    ``name``, fetched when needed (see the module docstring). ``text``: the text tower is
    needed too, so a source known to hold the image tower alone is refused at once."""
    if bool(checkpoint) == bool(pretrained):
        raise ConfigError("give the weights: --checkpoint FILE (an open_clip whole-model "
                          "file) or --pretrained TAG, one of the two")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}" if not path.exists()
                                  else f"checkpoint path is not a file: {path}")
        return ClipWeights(path, str(path), str(checkpoint))
    spec = clip_spec(name)
    given = str(pretrained)
    tag = OPEN_CLIP_TAGS.get(given, given)
    if tag in spec.releases:
        return _fetch_release(name, tag, spec.releases[tag], given, cache_dir)
    if given.startswith(HUB_PREFIX):
        repo, revision = split_hub_id(given[len(HUB_PREFIX):])
        return ClipWeights(_hub_file(repo, given, cache_dir, revision), given, given)
    if is_tag(given):
        if text:
            raise ConfigError(f"open_clip publishes no {name} weights under {given!r} (its "
                              f"tags: {', '.join(spec.releases)}); {given} names an image "
                              f"tower alone, and the text tower is needed here")
        resolved = resolve_weights(given, spec.tower, cache_dir=cache_dir)
        return ClipWeights(resolved.path, resolved.source, given,
                           resolved.official.tag if resolved.official else None)
    if "/" not in given and "." not in given and not Path(given).exists():
        raise ConfigError(f"unknown pretrained tag {given!r} for {name}: open_clip publishes "
                          f"{', '.join(spec.releases)}; or give a file, a URL or "
                          f"hf-hub:ORG/REPO")
    resolved = resolve_weights(given, None, cache_dir=cache_dir)
    return ClipWeights(resolved.path, resolved.source, given)


def _fetch_release(name: str, tag: str, repo: str, given: str,
                   cache_dir: PathLike | None) -> ClipWeights:
    where = f"{HUB_PREFIX}{repo}"
    try:
        path = _hub_file(repo, where, cache_dir)
    except WeightsNotCached:
        raise WeightsNotCached(
            f"offline (HF_HUB_OFFLINE=1) and {name}'s open_clip weights ({tag}: {where}, image "
            f"and text towers) are not in the Hugging Face cache {hub_cache_dir(cache_dir)}; "
            f"download them where there is network access (`hf download {repo} "
            f"{OPEN_CLIP_FILES[0]}`) and copy the cache, or pass --checkpoint FILE") from None
    return ClipWeights(path, f"{name} {tag} ({where})", given, REGISTRY_TAGS.get(tag))


def _hub_file(repo: str, where: str, cache_dir: PathLike | None,
              revision: str | None = None) -> Path:
    """The first of open_clip's weight files the repository has."""
    for filename in OPEN_CLIP_FILES:
        path = hub_download(repo, filename, revision=revision, cache_dir=cache_dir,
                            missing_ok=True)
        if path is not None:
            return path
    raise WeightsError(f"{where} has no open_clip weights ({' or '.join(OPEN_CLIP_FILES)})")
