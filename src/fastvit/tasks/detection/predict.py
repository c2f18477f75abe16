"""Detections of a trained Mask R-CNN on images, drawn as PNG (``fastvit detect predict``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from fastvit.files import write_json
from fastvit.tasks.detection.engine import LoadedDetector
from fastvit.tasks.inputs import input_images, output_stems
from fastvit.tasks.shared import read_rgb, save_png


def palette(n: int) -> list[tuple[int, int, int]]:
    """A colour per class (matplotlib's tab20, repeated)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(n)]


@torch.no_grad()
def predict_detections(loaded: LoadedDetector, inputs: Sequence[str | os.PathLike],
                       out_dir: str | os.PathLike, *, score_threshold: float = 0.5,
                       log: Callable[[str], None] = print) -> list[dict]:
    """Detect objects in ``inputs`` (image files, folders, glob patterns); writes an
    ``OUT/<stem>.png`` drawing per image and ``OUT/predictions.json``, and returns the
    predictions (``image``, ``drawing``, ``detections``), one per image in order."""
    out_dir = Path(out_dir)
    paths = input_images(inputs)
    model, names, category_ids = loaded.model, loaded.class_names, loaded.category_ids
    colours_of = palette(len(names))
    results = []
    for path, stem in zip(paths, output_stems(paths), strict=True):
        image = TF.pil_to_tensor(read_rgb(path))
        output = model([TF.to_dtype(image, torch.float32, scale=True).to(loaded.device)])[0]
        keep = output["scores"] >= score_threshold
        out = {k: v[keep].cpu() for k, v in output.items()}
        colours = [colours_of[int(label) - 1] for label in out["labels"]]
        drawn = image
        if len(out["boxes"]):
            drawn = draw_segmentation_masks(drawn, out["masks"][:, 0] > 0.5, alpha=0.45,
                                            colors=colours)
            captions = [f"{names[int(label) - 1]} {score:.2f}"
                        for label, score in zip(out["labels"], out["scores"], strict=True)]
            drawn = draw_bounding_boxes(drawn, out["boxes"], labels=captions, colors=colours,
                                        width=2)
        png = save_png(drawn, out_dir / f"{stem}.png")
        results.append({"image": str(path), "drawing": str(png), "detections": [
            {"label": names[int(label) - 1], "category_id": category_ids[int(label) - 1],
             "score": round(float(score), 4), "box_xyxy": [round(v, 2) for v in box.tolist()]}
            for label, score, box in zip(out["labels"], out["scores"], out["boxes"], strict=True)
        ]})
        log(f"{path}: {len(out['boxes'])} objects -> {png}")
    write_json(out_dir / "predictions.json", results)
    return results
