"""What an exported file says about its input, and the preprocessing that follows from it.

Our ONNX, TorchScript, torch.export and Core ML files carry ``fastvit.*``
metadata (variant, input size, raw or normalized input, mean/std, crop ratio,
interpolation, class names), so ``fastvit predict`` and int8 calibration feed a
file exactly what it expects without being told.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torchvision.transforms import v2

from fastvit.pipeline import Loaded, eval_transform

RAW_PIXELS, NORMALIZED = "raw_pixels_0_255", "normalized"


def export_metadata(loaded: Loaded, image_size: int, raw_pixels: bool) -> dict[str, str]:
    """What a consumer needs to feed the exported model (stored in the file)."""
    cfg = loaded.cfg
    meta = {
        "fastvit.variant": loaded.variant,
        "fastvit.image_size": str(image_size),
        "fastvit.input": RAW_PIXELS if raw_pixels else NORMALIZED,
        "fastvit.mean": json.dumps(list(cfg["mean"])),
        "fastvit.std": json.dumps(list(cfg["std"])),
        "fastvit.crop_pct": str(cfg["crop_pct"]),
        "fastvit.interpolation": str(cfg["interpolation"]),
        "fastvit.source": loaded.source,
    }
    if loaded.labels is not None:
        meta["fastvit.class_names"] = json.dumps(loaded.labels)
    return meta


def cfg_from_metadata(metadata: Mapping[str, str], fallback: Mapping[str, Any]
                      ) -> dict[str, Any]:
    """``fallback`` (a model cfg) with what the file's metadata says instead."""
    cfg = dict(fallback)
    for key in ("mean", "std"):
        if f"fastvit.{key}" in metadata:
            cfg[key] = tuple(json.loads(metadata[f"fastvit.{key}"]))
    if "fastvit.crop_pct" in metadata:
        cfg["crop_pct"] = float(metadata["fastvit.crop_pct"])
    if "fastvit.interpolation" in metadata:
        cfg["interpolation"] = metadata["fastvit.interpolation"]
    if "fastvit.image_size" in metadata:
        size = int(metadata["fastvit.image_size"])
        cfg["input_size"] = (3, size, size)
    return cfg


def takes_raw_pixels(metadata: Mapping[str, str]) -> bool:
    return metadata.get("fastvit.input", NORMALIZED).startswith("raw_pixels")


def transform_for_file(metadata: Mapping[str, str], fallback: Mapping[str, Any],
                       image_size: int | None = None) -> v2.Compose:
    """The eval transform an exported file asks for (its metadata), else ``fallback``'s."""
    cfg = cfg_from_metadata(metadata, fallback)
    size = image_size if "fastvit.image_size" not in metadata else None
    return eval_transform(cfg, size, raw_pixels=takes_raw_pixels(metadata))
