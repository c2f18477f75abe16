"""The data of ``benchmarks/small_folder.py``: what docs/training.md says it is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "small_folder.py"


def _script():
    spec = importlib.util.spec_from_file_location("small_folder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_folder_is_28px_grayscale_digits_all_distinct(tmp_path):
    root = _script().build_digit_folder(tmp_path, train_per_class=6, val_per_class=3)
    for split, per_class in (("train", 6), ("val", 3)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == [str(d) for d in range(10)]
        for name in classes:
            files = sorted((root / split / name).glob("*.png"))
            assert len(files) == per_class
            for path in files:
                with Image.open(path) as image:
                    assert (image.mode, image.size) == ("L", (28, 28))
    pixels = [np.asarray(Image.open(p)).tobytes() for p in root.rglob("*.png")]
    assert len(set(pixels)) == len(pixels) == 90  # every image a distinct rendering
    again = _script().build_digit_folder(tmp_path / "again", train_per_class=6,
                                         val_per_class=3)
    assert (np.asarray(Image.open(again / "val" / "3" / "0001.png")) ==
            np.asarray(Image.open(root / "val" / "3" / "0001.png"))).all()  # seeded
