"""Detections of a trained Mask R-CNN on image files, drawn as PNG (``fastvit detect predict``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from fastvit.files import write_json
from fastvit.tasks.detection.engine import load_detector
from fastvit.tasks.shared import read_rgb, save_png


def palette(n: int) -> list[tuple[int, int, int]]:
    """A colour per class (matplotlib's tab20, repeated)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(n)]


@torch.no_grad()
def predict_images(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path,
                   *, score_threshold: float = 0.5, device: torch.device | str = "cpu",
                   log: Callable[[str], None] = print) -> list[dict]:
    """Detect objects in ``images``; writes ``OUT/<stem>.png`` drawings and
    ``OUT/predictions.json``, and returns the predictions."""
    out_dir = Path(out_dir)
    model, meta = load_detector(checkpoint, device)
    names = meta["class_names"]
    colours_of = palette(len(names))
    results = []
    for path in map(Path, images):
        image = TF.pil_to_tensor(read_rgb(path))
        output = model([TF.to_dtype(image, torch.float32, scale=True).to(device)])[0]
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
        png = save_png(drawn, out_dir / f"{path.stem}.png")
        results.append({"image": str(path), "drawing": str(png), "detections": [
            {"label": names[int(label) - 1], "category_id": meta["category_ids"][int(label) - 1],
             "score": round(float(score), 4), "box_xyxy": [round(v, 2) for v in box.tolist()]}
            for label, score, box in zip(out["labels"], out["scores"], out["boxes"], strict=True)
        ]})
        log(f"{path}: {len(out['boxes'])} objects -> {png}")
    write_json(out_dir / "predictions.json", results)
    return results
