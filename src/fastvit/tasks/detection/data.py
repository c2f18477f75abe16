"""COCO instance data: ``CocoDetection`` + the transforms-v2 wrapper, validated up front.

Checks that would otherwise surface as a crash deep inside a DataLoader worker
(missing annotation file, an image listed but not on disk, a category id that is
not declared) are done once when the dataset is built, each as one
:class:`~fastvit.errors.DataError` that names the file.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from fastvit.errors import DataError

TARGET_KEYS = ("image_id", "boxes", "masks", "labels", "iscrowd")


class CocoInstances(CocoDetection):
    """``CocoDetection`` that validates its annotation file and knows the label mapping.

    ``category_ids[k - 1]`` is the COCO id of contiguous label ``k`` (0 is background,
    as torchvision's detection models expect); ``class_names`` follow the same order.
    With ``skip_empty`` images without any non-crowd object are dropped (training).
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, *,
                 skip_empty: bool = False, transforms: Any = None) -> None:
        ann_file, image_dir = Path(ann_file), Path(image_dir)
        if not ann_file.is_file():
            raise DataError(f"annotation file not found: {ann_file}")
        if not image_dir.is_dir():
            raise DataError(f"image folder not found: {image_dir}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                super().__init__(str(image_dir), str(ann_file), transforms=transforms)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{ann_file} is not valid JSON: {err}") from None
        except (AssertionError, KeyError, TypeError) as err:
            raise DataError(f"{ann_file} is not a COCO annotation file ({err!r})") from None
        self.ann_file = ann_file
        self._validate(image_dir)
        cats = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c.get("name", c["id"])) for c in cats]
        self.label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        if skip_empty:
            self.ids = [i for i in self.ids
                        if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns[i])]
            if not self.ids:
                raise DataError(f"{ann_file} has no image with a non-crowd annotation")

    def _validate(self, image_dir: Path) -> None:
        data, where = self.coco.dataset, self.ann_file
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{where} has no '{key}' list; is it a COCO instances file?")
        if not data["categories"]:
            raise DataError(f"{where} declares no categories")
        for ann in data["annotations"]:
            ann.setdefault("iscrowd", 0)  # keeps the wrapper's per-key lists aligned
            if ann.get("category_id") not in self.coco.cats:
                raise DataError(f"{where}: annotation {ann.get('id')} has category_id "
                                f"{ann.get('category_id')!r}, which is not in 'categories'")
            if ann.get("image_id") not in self.coco.imgs:
                raise DataError(f"{where}: annotation {ann.get('id')} refers to image_id "
                                f"{ann.get('image_id')!r}, which is not in 'images'")
            if "segmentation" not in ann or "bbox" not in ann or len(ann["bbox"]) != 4:
                raise DataError(f"{where}: annotation {ann.get('id')} needs 'bbox' [x, y, w, h] "
                                f"and 'segmentation'")
        missing = [img["file_name"] for img in data["images"]
                   if not (image_dir / img["file_name"]).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"image listed in {where} not found: {image_dir / missing[0]}{more}")

    def _load_image(self, id: int):  # noqa: A002 - torchvision's signature
        path = Path(self.root) / self.coco.loadImgs(id)[0]["file_name"]
        try:
            return super()._load_image(id)
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err}") from None


class PrepareTargets:
    """Map COCO ids to contiguous labels, drop crowd regions, give empty images
    empty tensors, then apply the v2 transforms to image, boxes and masks together."""

    def __init__(self, label_of: dict[int, int], transforms: v2.Transform) -> None:
        self.label_of = label_of
        self.transforms = transforms

    def __call__(self, image: Any, target: dict) -> tuple[torch.Tensor, dict]:
        h, w = image.height, image.width
        if "boxes" not in target:  # the wrapper returns only image_id for empty images
            target = {"image_id": target["image_id"],
                      "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY",
                                                        canvas_size=(h, w)),
                      "masks": tv_tensors.Mask(torch.zeros(0, h, w, dtype=torch.uint8)),
                      "labels": torch.zeros(0, dtype=torch.int64), "iscrowd": []}
        keep = torch.tensor([not c for c in target["iscrowd"]], dtype=torch.bool)
        labels = torch.tensor([self.label_of[int(c)] for c in target["labels"]],
                              dtype=torch.int64)
        boxes, masks = target["boxes"], target["masks"]
        target = {"image_id": target["image_id"],
                  "boxes": tv_tensors.wrap(boxes[keep], like=boxes),
                  "masks": tv_tensors.Mask(masks[keep]), "labels": labels[keep]}
        return self.transforms(image, target)


def train_transforms(hflip: float = 0.5, scales: tuple[int, ...] = ()) -> v2.Transform:
    """Flip (and optional multi-scale shorter side) applied jointly to image, boxes,
    masks; Mask R-CNN's own transform then resizes to ``min_size``/``max_size``."""
    ops: list[v2.Transform] = [v2.ToImage()]
    if scales:
        ops.append(v2.RandomShortestSize(list(scales)))
    ops += [v2.RandomHorizontalFlip(hflip), v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes()]
    return v2.Compose(ops)


def eval_transforms() -> v2.Transform:
    """No resizing here: predictions must come back in original image coordinates,
    which Mask R-CNN's postprocess does for the sizes it was given."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def coco_dataset(image_dir: str | Path, ann_file: str | Path, *, train: bool,
                 hflip: float = 0.5, scales: tuple[int, ...] = ()) -> CocoInstances:
    """A validated COCO split yielding ``(image float CHW in [0,1], target dict)``."""
    dataset = CocoInstances(image_dir, ann_file, skip_empty=train)
    transforms = train_transforms(hflip, scales) if train else eval_transforms()
    dataset.transforms = PrepareTargets(dataset.label_of, transforms)
    return wrap_dataset_for_transforms_v2(dataset, target_keys=TARGET_KEYS)


def split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """Standard COCO layout: ``root/annotations/instances_{split}.json``, ``root/{split}/``."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"
