"""Your own images, first try: `fastvit train` with plain flags on a small folder.

    python benchmarks/small_folder.py --out runs/small_folder [--epochs 6] [--threads 2]
        [--train-per-class 640] [--val-per-class 160] [--keep-data DIR]

Builds a 10-class ImageFolder of 28x28 grayscale PNGs (``train/`` and ``val/``,
8,000 images by default) from data that ships with scikit-learn, then runs::

    fastvit train --data DIR --model fastvit_t8 --epochs 6 --image-size 64 \
        --batch-size 64 --out OUT/run

with nothing else (no recipe, no ``--set``), and reports the held-out top-1 of
the best checkpoint, the wall time and the machine's load, as one JSON object
(also written to ``OUT/result.json``).

The data: ``sklearn.datasets.load_digits`` (1,797 handwritten digits, 8x8,
values 0..16). The 1,797 digits are first split 80/20 per class (seeded), so
that no handwritten digit has variants on both sides; each split is then grown
to its size by drawing digits of the class at random and rendering each draw
upsampled (bicubic) to 28x28 under a random affine jitter (rotation +-12
degrees, shift +-2 px, scale 0.85-1.15, shear +-8 degrees) with a little pixel
noise. Every image is a distinct rendering; the val images come from digits
the training images never saw.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fastvit.bench.run import cpu_name

REPO = Path(__file__).resolve().parents[1]
SIZE = 28


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(-12, 12))
    scale = float(rng.uniform(0.85, 1.15))
    shear = float(rng.uniform(-8, 8))
    dx, dy = (float(v) for v in rng.uniform(-2, 2, size=2))
    from torchvision.transforms.v2 import functional as TF

    return TF.affine(image, angle=angle, translate=[dx, dy], scale=scale, shear=[shear, 0.0],
                     interpolation=TF.InterpolationMode.BILINEAR)


def build_digit_folder(root: Path, train_per_class: int = 640, val_per_class: int = 160,
                       seed: int = 0) -> Path:
    """``root/{train,val}/<digit>/<n>.png``: 28x28 grayscale jittered renderings of
    scikit-learn's digits, val digits disjoint from train digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pools: dict[str, dict[int, np.ndarray]] = {"train": {}, "val": {}}
    for label in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == label))
        n_val = round(0.2 * len(members))
        pools["val"][label], pools["train"][label] = members[:n_val], members[n_val:]
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(10):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for n, index in enumerate(rng.choice(pools[split][label], size=per_class)):
                pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
                big = Image.fromarray(pixels, mode="L").resize((SIZE, SIZE), Image.BICUBIC)
                arr = np.asarray(_jitter(big, rng), dtype=np.float32)
                arr = np.clip(arr + rng.normal(0, 6, arr.shape), 0, 255).astype(np.uint8)
                Image.fromarray(arr, mode="L").save(folder / f"{n:04d}.png")
    return root


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of the run (default: inherited)")
    parser.add_argument("--train-per-class", type=int, default=640)
    parser.add_argument("--val-per-class", type=int, default=160)
    parser.add_argument("--keep-data", type=Path, help="build (or reuse) the folder here")
    args = parser.parse_args()

    data = args.keep_data or args.out / "data"
    if not (data / "train").is_dir():
        build_digit_folder(data, args.train_per_class, args.val_per_class)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    command = [sys.executable, "-m", "fastvit", "train", "--data", str(data), "--model",
               "fastvit_t8", "--epochs", str(args.epochs), "--image-size", "64",
               "--batch-size", "64", "--out", str(args.out / "run")]
    load_before = _load()
    start = time.perf_counter()
    done = subprocess.run(command, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return done.returncode
    summary = json.loads((args.out / "run" / "summary.json").read_text())
    result = {"command": " ".join(["fastvit", *command[3:]]), "wall_s": round(wall, 1),
              "best_top1": summary["best_top1"], "history": summary["history"],
              "train_images": summary["train_images"], "cpus": os.cpu_count(),
              "cpu": cpu_name(), "threads": args.threads,
              "load_before": load_before, "load_after": _load(),
              "date": time.strftime("%Y-%m-%d")}
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
