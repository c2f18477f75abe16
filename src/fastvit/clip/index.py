"""Image embeddings on disk: the index ``fastvit embed`` writes and ``fastvit search`` reads.

Two formats, chosen by the file name:

* ``NAME.safetensors``: the tensor ``embeddings`` (images x dimensions, float32,
  L2-normalized) and, in the header metadata, the image paths and how they were made;
* ``NAME.npy``: the same array for numpy, with a sidecar ``NAME.json`` holding the
  paths and the rest.

Either records the CLIP model (open_clip's name), its weights (``checkpoint``, an
absolute path, or ``pretrained``, a tag) and the preprocessing (input size, crop
ratio, interpolation, mean/std), so a search embeds its query with the same model.
Both files of a pair are written to temporary names and moved into place together.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvit.checkpoints.reading import PREPROCESSING_KEYS
from fastvit.clip.model import ClipModel
from fastvit.errors import ConfigError, DataError
from fastvit.files import atomic_path
from fastvit.pipeline import eval_transform

INDEX_FORMAT = "fastvit-clip-embeddings/1"
SUFFIXES = (".safetensors", ".npy")


@dataclass
class EmbeddingIndex:
    """L2-normalized image embeddings, one row per path of ``paths``."""

    embeddings: torch.Tensor
    paths: list[str]
    model: str
    checkpoint: str | None = None
    pretrained: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable image -> reason

    def info(self) -> dict[str, Any]:
        """Everything but the array (the sidecar / header metadata)."""
        return {"format": INDEX_FORMAT, "model": self.model, "checkpoint": self.checkpoint,
                "pretrained": self.pretrained, "dim": int(self.embeddings.shape[1]),
                "count": len(self.paths), "preprocessing": self.preprocessing,
                "paths": self.paths, "skipped": self.skipped}


def preprocessing_of(clip: ClipModel) -> dict[str, Any]:
    cfg = clip.cfg
    return {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k]
            for k in PREPROCESSING_KEYS if k in cfg}


@torch.inference_mode()
def embed_images(clip: ClipModel, paths: Sequence[str | Path], *, batch_size: int = 16,
                 skippable: Collection[str | Path] = (), device: torch.device | str = "cpu",
                 checkpoint: str | None = None, pretrained: str | None = None
                 ) -> EmbeddingIndex:
    """Embed every image of ``paths`` with ``clip``'s image tower, ``batch_size`` decoded
    at a time. A named file that cannot be read is a DataError; one in ``skippable``
    (found in a folder) is logged once and left out (listed in ``skipped``)."""
    from fastvit.data.bad_images import BadImageLog
    from fastvit.data.datasets import UnreadableImage
    from fastvit.deploy.predict import read_image

    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    skip, bad = {str(p) for p in skippable}, BadImageLog()
    transform = eval_transform(clip.cfg)
    model = clip.to(device).eval()
    rows: list[torch.Tensor] = []
    kept: list[str] = []
    for start in range(0, len(paths), batch_size):
        images = []
        for path in map(str, paths[start:start + batch_size]):
            try:
                images.append(transform(read_image(path)))
            except DataError as err:
                if path not in skip:
                    raise
                bad.add([UnreadableImage(path, str(err).split(": ", 1)[-1])])
                continue
            kept.append(path)
        if images:
            rows.append(model.encode_image(torch.stack(images).to(device)).float().cpu())
    if not rows:
        raise DataError("no image could be read: nothing to embed")
    return EmbeddingIndex(torch.cat(rows), kept, clip.name, checkpoint, pretrained,
                          preprocessing_of(clip), dict(bad.reasons))


def check_index_path(path: str | Path) -> str:
    """The format of an embeddings file name (``.safetensors`` or ``.npy``); ConfigError
    for any other name."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"{path}: an embeddings file ends in .safetensors or .npy (with a "
                          f"sidecar .json)")
    return path.suffix


def sidecar(path: str | Path) -> Path:
    """The JSON file next to a ``.npy`` index."""
    return Path(path).with_suffix(".json")


def write_index(index: EmbeddingIndex, path: str | Path) -> list[Path]:
    """Write ``index`` to ``path`` (``.safetensors``, or ``.npy`` + sidecar ``.json``);
    returns the files written. Nothing is left half-written."""
    path = Path(path)
    info = index.info()
    array = index.embeddings.detach().float().contiguous()
    if check_index_path(path) == ".safetensors":
        from safetensors.torch import save_file

        metadata = {k: json.dumps(v) for k, v in info.items()}  # str -> str, read back exactly
        with atomic_path(path) as tmp:
            save_file({"embeddings": array}, str(tmp), metadata=metadata)
        return [path]
    with contextlib.ExitStack() as stack:  # both move into place, or neither
        tmp_json = stack.enter_context(atomic_path(sidecar(path)))
        tmp_npy = stack.enter_context(atomic_path(path))
        with open(tmp_npy, "wb") as fh:
            np.save(fh, array.numpy())
        tmp_json.write_text(json.dumps(info, indent=2) + "\n")
    return [path, sidecar(path)]


def _load(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw = dict(fh.metadata() or {})
            if "embeddings" not in fh.keys():  # noqa: SIM118
                raise DataError(f"{path} holds no 'embeddings' tensor")
            array = fh.get_tensor("embeddings")
        return array, {k: json.loads(v) for k, v in raw.items()}
    side = sidecar(path)
    if not side.is_file():
        raise DataError(f"{path} has no sidecar {side} (paths and model)")
    info = json.loads(side.read_text())
    return torch.from_numpy(np.load(path, allow_pickle=False)), info


def read_index(path: str | Path) -> EmbeddingIndex:
    """An index written by :func:`write_index`; anything else is one DataError."""
    path = Path(path)
    check_index_path(path)
    if not path.is_file():
        raise DataError(f"embeddings file not found: {path}")
    try:
        array, info = _load(path)
    except DataError:
        raise
    except Exception as err:  # safetensors, numpy and json raise their own types
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot read embeddings {path}: {reason}") from None
    if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
        raise DataError(f"{path} is not an embeddings file of fastvit embed")
    paths = info.get("paths")
    if array.ndim != 2 or not isinstance(paths, list) or len(paths) != array.shape[0]:
        raise DataError(f"{path}: {array.shape[0] if array.ndim else 0} embeddings but "
                        f"{len(paths) if isinstance(paths, list) else 'no'} paths recorded")
    return EmbeddingIndex(array.float(), [str(p) for p in paths], str(info["model"]),
                          info.get("checkpoint"), info.get("pretrained"),
                          dict(info.get("preprocessing") or {}), dict(info.get("skipped") or {}))
