"""Synthetic COCO-instances and ADE20K-format data sets for the dense-task tests.

Images show coloured rectangles and ellipses on a textured background; the
annotations are exact (polygons for rectangles, compressed RLE for ellipses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[2]

#: COCO category ids deliberately not contiguous, to exercise the label mapping
COCO_CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}]
#: ADE-style palette per class 1..3 (class 1 = background texture)
ADE_COLOURS = {1: (40, 40, 40), 2: (220, 40, 40), 3: (40, 200, 60)}
SHAPE_COLOURS = {3: (230, 50, 50), 7: (50, 90, 230)}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(20, 60, size=(size, size, 3), dtype=np.uint8)
    return base


def make_coco(root: Path, split: str = "train", n_images: int = 6, size: int = 128,
              seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/split/*.png`` and ``root/annotations/instances_split.json``;
    every image has 2-3 objects (squares as polygons, discs as RLE)."""
    rng = np.random.default_rng(seed)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(n_images):
        canvas = Image.fromarray(_background(rng, size))
        draw = ImageDraw.Draw(canvas)
        cells = [int(c) for c in rng.permutation(4)[: rng.integers(2, 4)]]
        for cell in cells:
            cx0, cy0 = (cell % 2) * size // 2, (cell // 2) * size // 2
            side = int(rng.integers(size // 5, size * 2 // 5))
            x0 = cx0 + int(rng.integers(2, size // 2 - side - 1))
            y0 = cy0 + int(rng.integers(2, size // 2 - side - 1))
            cat = int(rng.choice([3, 7]))
            mask_img = Image.new("L", (size, size), 0)
            box = [x0, y0, x0 + side - 1, y0 + side - 1]
            if cat == 3:
                draw.rectangle(box, fill=SHAPE_COLOURS[cat])
                ImageDraw.Draw(mask_img).rectangle(box, fill=1)
                x1, y1 = x0 + side, y0 + side
                segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            else:
                draw.ellipse(box, fill=SHAPE_COLOURS[cat])
                ImageDraw.Draw(mask_img).ellipse(box, fill=1)
                rle = mask_utils.encode(np.asfortranarray(np.array(mask_img, dtype=np.uint8)))
                segmentation = {"size": [int(v) for v in rle["size"]],
                                "counts": rle["counts"].decode("ascii")}
            m = np.array(mask_img)
            ys, xs = np.nonzero(m)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1)]
            annotations.append({"id": ann_id, "image_id": i + 1, "category_id": cat,
                                "bbox": bbox, "area": float(m.sum()), "iscrowd": 0,
                                "segmentation": segmentation})
            ann_id += 1
        name = f"{split}_{i:04d}.png"
        canvas.save(image_dir / name)
        images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": COCO_CATEGORIES}))
    return image_dir, ann_file


def make_ade(root: Path, split: str = "training", n_images: int = 6, size: int = 128,
             seed: int = 0, ignore_patch: bool = True) -> Path:
    """Write ``root/images/split/*.jpg`` and ``root/annotations/split/*.png``:
    background class 1, a red rectangle (class 2), a green ellipse (class 3) and a
    small unlabeled (0, "other") corner patch."""
    rng = np.random.default_rng(seed)
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        label = Image.new("L", (size, size), 1)
        ldraw = ImageDraw.Draw(label)
        a = [int(v) for v in rng.integers(4, size // 2 - 8, size=2)]
        wh = [int(v) for v in rng.integers(size // 4, size // 2, size=2)]
        ldraw.rectangle([a[0], a[1], a[0] + wh[0], a[1] + wh[1]], fill=2)
        r = int(rng.integers(size // 6, size // 4))
        b = [int(v) for v in rng.integers(size // 2, size - r, size=2)]
        ldraw.ellipse([b[0] - r, b[1] - r, b[0] + r, b[1] + r], fill=3)
        if ignore_patch:
            ldraw.rectangle([size - 12, 0, size - 1, 11], fill=0)
        lab = np.array(label)
        image = _background(rng, size).astype(np.int16)
        for cls, colour in ADE_COLOURS.items():
            if cls > 1:
                image[lab == cls] = colour
        image[lab == 0] = (128, 128, 0)
        image = np.clip(image + rng.integers(-10, 10, size=image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(img_dir / f"ADE_{split}_{i:05d}.jpg", quality=95)
        label.save(ann_dir / f"ADE_{split}_{i:05d}.png")
    return root


def torchrun(args: list[str], nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m fastvit ARGS`` (gloo on CPU), one
    thread per process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", str(nproc), "-m", "fastvit", *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
