"""Small on-disk image datasets for data/evaluation tests (written with PIL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def random_rgb(height: int = 40, width: int = 52, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 52),
                seed: int = 0, fmt: str | None = None, color: tuple[int, int, int] | None = None
                ) -> Path:
    """Write an image of ``mode`` (RGB, L, RGBA, P, CMYK, LA, I;16) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    array = (np.full((h, w, 3), color, dtype=np.uint8) if color is not None
             else random_rgb(h, w, seed))
    image = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray(array[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def write_truncated_jpeg(path: Path, seed: int = 1) -> Path:
    full = write_image(path, seed=seed, size=(64, 64))
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_not_an_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is a text file with a .jpg suffix\n")
    return path


def make_image_folder(root: Path, classes: dict[str, int], seed: int = 0,
                      size: tuple[int, int] = (40, 52), suffix: str = ".jpg") -> Path:
    """``root/<class>/<i>.jpg`` with ``classes[name]`` random RGB images per class."""
    k = seed
    for name, count in classes.items():
        for i in range(count):
            write_image(root / name / f"{i}{suffix}", size=size, seed=k)
            k += 1
    return root


def make_split_dataset(root: Path, classes: list[str], per_class: int = 2,
                       val_dir: str = "val") -> Path:
    make_image_folder(root / "train", {c: per_class for c in classes}, seed=0)
    make_image_folder(root / val_dir, {c: per_class for c in classes}, seed=100)
    return root
