"""ADE20K-layout semantic segmentation data and its transforms-v2 pipelines.

Layout: ``ROOT/images/{split}/NAME.jpg`` and ``ROOT/annotations/{split}/NAME.png``,
a single-channel PNG per image with 0 = "other" (ignored) and 1..K the classes.
Labels are shifted to 0..K-1 with 0 -> 255 (``IGNORE_INDEX``), as mmseg's
``reduce_zero_label``. Pairing problems are found when the dataset is built;
out-of-range label values when a file is read; each a DataError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastvit.errors import DataError
from fastvit.models import IMAGENET_MEAN, IMAGENET_STD

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ADE20KSegmentation(Dataset):
    """``(image, label)`` pairs of one split; ``transforms(image, mask)`` is a v2 transform
    receiving a PIL image and a ``tv_tensors.Mask`` of int64 labels."""

    def __init__(self, root: str | Path, split: str, num_classes: int = 150,
                 transforms: v2.Transform | None = None) -> None:
        self.root, self.split, self.num_classes = Path(root), split, num_classes
        self.transforms = transforms
        img_dir = self.root / "images" / split
        ann_dir = self.root / "annotations" / split
        for folder in (img_dir, ann_dir):
            if not folder.is_dir():
                raise DataError(f"folder not found: {folder} (expected the ADE20K layout "
                                f"images/{split}/, annotations/{split}/)")
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"no images (.jpg/.png) in {img_dir}")
        self.samples: list[tuple[Path, Path]] = []
        for image in images:
            ann = ann_dir / f"{image.stem}.png"
            if not ann.is_file():
                raise DataError(f"annotation file not found: {ann} (for image {image})")
            self.samples.append((image, ann))
        stems = {p.stem for p in images}
        orphans = sorted(p for p in ann_dir.glob("*.png") if p.stem not in stems)
        if orphans:
            raise DataError(f"image for annotation {orphans[0]} not found in {img_dir}"
                            + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""))

    def __len__(self) -> int:
        return len(self.samples)

    def read_label(self, path: Path, size: tuple[int, int]) -> torch.Tensor:
        """Raw PNG -> int64 labels 0..K-1 / 255, validated against ``num_classes``."""
        try:
            with Image.open(path) as img:
                raw = np.array(img)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read annotation {path}: {err}") from None
        if raw.ndim != 2:
            raise DataError(f"annotation {path} must be a single-channel label map, "
                            f"got shape {raw.shape}")
        if raw.shape[::-1] != size:
            raise DataError(f"annotation {path} is {raw.shape[1]}x{raw.shape[0]} but its image "
                            f"is {size[0]}x{size[1]}")
        top = int(raw.max())
        if top > self.num_classes:
            raise DataError(f"annotation {path} has label {top}, outside 0..{self.num_classes} "
                            f"(0 = ignored, 1..{self.num_classes} = classes)")
        label = torch.from_numpy(raw.astype(np.int64)) - 1
        label[label < 0] = IGNORE_INDEX
        return label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, ann_path = self.samples[index]
        try:
            with Image.open(image_path) as img:
                image = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image {image_path}: {err}") from None
        label = tv_tensors.Mask(self.read_label(ann_path, image.size))
        if self.transforms is not None:
            return self.transforms(image, label)
        return v2.functional.pil_to_tensor(image), label


def _to_model_input() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transforms(crop_size: int, base_size: int, scale_range: tuple[float, float],
                     hflip: float = 0.5, photometric: bool = True) -> v2.Transform:
    """mmseg's ADE20K training pipeline in transforms v2: random rescale so that the
    shorter side is ``base_size * U(scale_range)``, random ``crop_size`` crop (padded with
    ignore labels where the image is smaller), flip, optional colour distortion."""
    lo, hi = (int(round(base_size * s)) for s in scale_range)
    ops: list[v2.Transform] = [
        v2.ToImage(),
        v2.RandomResize(lo, hi + 1),
        v2.RandomCrop(crop_size, pad_if_needed=True,
                      fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.RandomHorizontalFlip(hflip),
    ]
    if photometric:
        ops.append(v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05))
    return v2.Compose([*ops, *_to_model_input()])


class EvalTransform:
    """Resize the image so its shorter side is ``base_size``; keep the label at full
    resolution (metrics are computed at the original size)."""

    def __init__(self, base_size: int) -> None:
        self.image = image_transform(base_size)

    def __call__(self, image: Image.Image, label: torch.Tensor) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
        return self.image(image), label.as_subclass(torch.Tensor)


def image_transform(base_size: int) -> v2.Transform:
    """What ``predict`` applies to a bare image."""
    return v2.Compose([v2.ToImage(), v2.Resize(base_size), *_to_model_input()])
