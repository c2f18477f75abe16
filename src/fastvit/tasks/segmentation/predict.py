"""Label maps of a trained Semantic FPN on images, as colour PNGs (``fastvit segment predict``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fastvit.tasks.inputs import input_images, output_stems
from fastvit.tasks.segmentation.data import image_transform
from fastvit.tasks.segmentation.engine import LoadedSegmenter, infer_logits
from fastvit.tasks.shared import read_rgb, save_png


def palette(num_classes: int) -> np.ndarray:
    """A fixed, well-spread colour per class (uint8, ``num_classes x 3``)."""
    rng = np.random.default_rng(20231)
    return rng.integers(0, 256, size=(num_classes, 3), dtype=np.uint8)


@torch.no_grad()
def predict_label_maps(loaded: LoadedSegmenter, inputs: Sequence[str | os.PathLike],
                       out_dir: str | os.PathLike, *, mode: str | None = None,
                       overlay: bool = False, log: Callable[[str], None] = print
                       ) -> list[dict]:
    """Write ``OUT/<stem>.png`` (colourized labels; with ``overlay`` also
    ``<stem>_overlay.png``) for each image of ``inputs`` (files, folders, glob
    patterns); returns what was written, one entry per image in order."""
    out_dir = Path(out_dir)
    paths = input_images(inputs)
    recipe = loaded.recipe
    to_input = image_transform(recipe.scale)
    colours = palette(recipe.model.num_classes)
    written = []
    for path, stem in zip(paths, output_stems(paths), strict=True):
        image = read_rgb(path)
        x = to_input(image).unsqueeze(0).to(loaded.device)
        logits = infer_logits(loaded.model, x, mode or recipe.eval.mode, recipe.data.crop_size,
                              recipe.eval.stride)
        logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear",
                               align_corners=False)
        labels = logits.argmax(1)[0].cpu().numpy()
        mask = Image.fromarray(colours[labels])
        png = save_png(mask, out_dir / f"{stem}.png")
        item = {"image": str(path), "labels_png": str(png),
                "classes": [int(c) for c in np.unique(labels)]}
        line = f"{path}: {len(item['classes'])} classes -> {png}"
        if overlay:
            item["overlay_png"] = str(save_png(Image.blend(image, mask, 0.5),
                                               out_dir / f"{stem}_overlay.png"))
            line += f" (+ {stem}_overlay.png)"
        log(line)
        written.append(item)
    return written
