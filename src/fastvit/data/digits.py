"""A small real dataset that ships with scikit-learn: handwritten digits, upsampled.

``sklearn.datasets.load_digits`` holds 1797 8x8 grayscale digits (10 classes,
values 0..16). They are upsampled once (bilinear) to ``image_size`` RGB tensors
kept in memory, so training needs no decoding and no download. The held-out
split is stratified and deterministic (``seed``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import v2

from fastvit.data.splits import stratified_split
from fastvit.errors import ConfigError
from fastvit.extras import require

__all__ = ["DIGIT_CLASSES", "DigitsDataset", "build_digits", "digits_normalize",
           "digits_train_transform", "stratified_split"]

DIGIT_CLASSES = [str(i) for i in range(10)]
_MAX_VALUE = 16.0


def _load_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    load_digits = require("sklearn.datasets", "the digits dataset (--data digits)").load_digits
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / _MAX_VALUE
    return images, torch.as_tensor(digits.target, dtype=torch.long)


class DigitsDataset(Dataset):
    """``(image, label)`` pairs of scikit-learn's digits at ``image_size`` x ``image_size``.

    ``transform`` receives a float32 (3, S, S) tensor in [0, 1]; without one the
    image is only normalized (see :func:`digits_normalize`).
    """

    def __init__(self, split: str = "train", image_size: int = 64,
                 transform: Callable | None = None, seed: int = 0,
                 val_fraction: float = 0.2) -> None:
        if split not in ("train", "val"):
            raise ConfigError(f"digits split must be 'train' or 'val', got {split!r}")
        if image_size < 8:
            raise ConfigError(f"digits image_size must be >= 8, got {image_size}")
        images, labels = _load_arrays()
        train_idx, val_idx = stratified_split(labels, val_fraction, seed)
        self.indices = train_idx if split == "train" else val_idx
        small = images[self.indices].unsqueeze(1)
        # One channel in memory; expanded to RGB per sample (a view, no copy).
        self.images = F.interpolate(small, size=(image_size, image_size), mode="bilinear",
                                    align_corners=False).clamp_(0, 1)
        self.targets = labels[self.indices]
        self.split, self.image_size = split, image_size
        self.transform = transform if transform is not None else digits_normalize()
        self.classes = list(DIGIT_CLASSES)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].expand(3, -1, -1)
        return self.transform(image), int(self.targets[index])


# Rounded pixel statistics of the upsampled training images (mean 0.306, std 0.324
# at 32 px, scaled to [0, 1]); fixed constants so every split is normalized alike.
DIGITS_MEAN = (0.30,) * 3
DIGITS_STD = (0.33,) * 3


def digits_normalize() -> v2.Normalize:
    """Fixed normalization close to the digits' pixel statistics (mean 0.30, std 0.33)."""
    return v2.Normalize(DIGITS_MEAN, DIGITS_STD)


def digits_train_transform(image_size: int) -> v2.Compose:
    """Light augmentation: small rotation/shift/zoom (no flips: digits are not symmetric)."""
    del image_size  # the affine parameters are relative, kept for a uniform signature
    return v2.Compose([
        v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1),
                        interpolation=v2.InterpolationMode.BILINEAR),
        digits_normalize(),
    ])


def build_digits(image_size: int = 32, *, seed: int = 0, val_fraction: float = 0.2,
                 augment: bool = True) -> tuple[DigitsDataset, DigitsDataset, list[str]]:
    """Train/val digits datasets (train augmented) and the class names ``"0"``..``"9"``."""
    train_tf = digits_train_transform(image_size) if augment else digits_normalize()
    train = DigitsDataset("train", image_size, train_tf, seed, val_fraction)
    val = DigitsDataset("val", image_size, digits_normalize(), seed, val_fraction)
    return train, val, list(DIGIT_CLASSES)
