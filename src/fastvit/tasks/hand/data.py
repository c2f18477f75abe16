"""The FreiHAND dataset layout, read with consistent 2D/3D augmentation.

Layout (``ROOT`` is the folder ``training/`` and ``evaluation/`` branch off)::

    ROOT/training/rgb/%08d.jpg    N x 4 images: version v of sample i is file v*N + i
    ROOT/training_K.json          N camera intrinsics (3x3)
    ROOT/training_mano.json       N x [[61]]: 48 pose + 10 shape + 3 (uv_root, scale)
    ROOT/training_xyz.json        N x 21 joints, camera frame, metres
    ROOT/training_verts.json      N x 778 MANO vertices, camera frame, metres
    ROOT/training_scale.json      N reference bone lengths (|xyz[9] - xyz[10]|, metres)
    ROOT/evaluation/rgb/%08d.jpg  M images (one version)
    ROOT/evaluation_{K,scale,xyz,verts,mano}.json

``N`` comes from the JSON lengths (32,560 for the real set; tests use a few).
The 4 training versions (green screen, homogenized, two auto-colourizations)
share one annotation. The MANO vector follows the FreiHAND toolbox
(``utils/model.py: split_theta``): pose = global orientation + 45 finger
axis-angles relative to the MANO mean pose, shape = 10 betas, then the
image-plane root (2) and an orthographic scale (1) the toolbox uses to place the
hand; only pose and shape are used here (the 3D targets are ``xyz``/``verts``).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fastvit.data.datasets import load_rgb
from fastvit.errors import DataError
from fastvit.models import IMAGENET_MEAN, IMAGENET_STD
from fastvit.tasks.hand.mano import axis_angle_to_matrix, matrix_to_axis_angle

SPLITS = ("training", "evaluation")
NUM_JOINTS = 21


def _load_json(path: Path) -> list:
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {path} is not valid JSON ({err})") from None
    if not isinstance(data, list) or not data:
        raise DataError(f"annotation file {path} must hold a non-empty list")
    return data


def _tensor(values: list, path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        t = torch.tensor(values, dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise DataError(f"annotation file {path} holds non-numeric entries ({err})") from None
    n = t.shape[0]
    if t.numel() != n * math.prod(shape):
        raise DataError(f"annotation file {path}: each entry must have shape {shape}, got "
                        f"{tuple(t.shape[1:])}")
    return t.reshape(n, *shape)


@dataclass
class FreiHandAnnotations:
    """All annotations of one split as tensors (``None`` where a file is absent)."""

    K: torch.Tensor                    # (N, 3, 3)
    xyz: torch.Tensor | None           # (N, 21, 3)
    verts: torch.Tensor | None         # (N, V, 3)
    mano: torch.Tensor | None          # (N, 61)
    scale: torch.Tensor | None         # (N,)

    def __len__(self) -> int:
        return self.K.shape[0]


def load_annotations(root: str | os.PathLike, split: str, *,
                     require: tuple[str, ...] = ("xyz", "verts")) -> FreiHandAnnotations:
    """Read ``{split}_*.json``; ``require`` names the optional files that must exist."""
    if split not in SPLITS:
        raise DataError(f"unknown FreiHAND split {split!r}; expected one of {SPLITS}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"FreiHAND folder {root} does not exist")
    paths = {k: root / f"{split}_{k}.json" for k in ("K", "xyz", "verts", "mano", "scale")}
    raw = {k: _load_json(p) for k, p in paths.items() if k == "K" or k in require
           or p.is_file()}
    n = len(raw["K"])
    for key, values in raw.items():
        if len(values) != n:
            raise DataError(f"annotation file {paths[key]} has {len(values)} entries but "
                            f"{paths['K']} has {n}; the {split} files must have equal lengths")
    shapes = {"K": (3, 3), "xyz": (NUM_JOINTS, 3), "mano": (61,), "scale": ()}
    out = {k: _tensor(v, paths[k], shapes[k]) for k, v in raw.items() if k != "verts"}
    if "verts" in raw:
        nv = len(raw["verts"][0]) if isinstance(raw["verts"][0], list) else 0
        out["verts"] = _tensor(raw["verts"], paths["verts"], (nv, 3))
    return FreiHandAnnotations(out["K"], out.get("xyz"), out.get("verts"), out.get("mano"),
                               out.get("scale"))


def project(K: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """Pinhole projection (..., N, 3) -> pixel coordinates (..., N, 2)."""
    uvw = xyz @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:].clamp_min(1e-6)


def rotation_z(angle_deg: float) -> torch.Tensor:
    """Camera-frame rotation matching ``TF.affine(angle)`` of the image (x right, y down)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Augmentation:
    """Training-time jitter; all zero means none (evaluation)."""

    scale: float = 0.0        # image zoom factor drawn from [1 - scale, 1 + scale]
    rotation: float = 0.0     # in-plane rotation in degrees, [-rotation, rotation]
    translate: float = 0.0    # shift as a fraction of the side, [-translate, translate]
    color_jitter: float = 0.0  # brightness/contrast/saturation strength

    @property
    def geometric(self) -> bool:
        return any((self.scale, self.rotation, self.translate))


class FreiHandDataset(Dataset):
    """One FreiHAND split as training/evaluation samples at ``input_size`` pixels.

    A sample is a dict: ``image`` (3, S, S) normalized, ``joints_2d`` (21, 2) in
    [-1, 1] image coordinates, ``joints_3d`` (21, 3) and ``vertices`` (V, 3) in
    the camera frame (metres), ``pose`` (48), ``shape`` (10), ``has_mano`` and
    ``index``. Augmentation (scale/rotation/shift of the crop, colour) keeps all
    of them consistent: an in-plane rotation turns the 2D keypoints with the
    image, the 3D points about the optical axis and the MANO global orientation.
    """

    def __init__(self, root: str | os.PathLike, split: str = "training", *,
                 input_size: int = 224, versions: tuple[int, ...] | None = None,
                 augment: Augmentation | None = None, require_targets: bool = True,
                 check_images: bool = True) -> None:
        self.root = Path(root)
        self.split = split
        self.input_size = int(input_size)
        require = ("xyz", "verts") if require_targets else ()
        if split == "training" and require_targets:
            require = (*require, "mano")
        self.ann = load_annotations(self.root, split, require=require)
        n = len(self.ann)
        if versions is None:
            versions = (0, 1, 2, 3) if split == "training" else (0,)
        if split == "evaluation" and tuple(versions) != (0,):
            raise DataError("the FreiHAND evaluation split has a single image version (0)")
        if not versions or any(v < 0 for v in versions):
            raise DataError(f"image versions must be non-negative, got {versions}")
        self.versions = tuple(int(v) for v in versions)
        self.image_dir = self.root / split / "rgb"
        self.items = [(v, i) for v in self.versions for i in range(n)]
        self.augment = augment or Augmentation()
        self.color = (v2.ColorJitter(self.augment.color_jitter, self.augment.color_jitter,
                                     self.augment.color_jitter)
                      if self.augment.color_jitter > 0 else None)
        if check_images:
            self._check_images()

    def image_path(self, version: int, index: int) -> Path:
        return self.image_dir / f"{version * len(self.ann) + index:08d}.jpg"

    def _check_images(self) -> None:
        if not self.image_dir.is_dir():
            raise DataError(f"image folder {self.image_dir} does not exist")
        present = {e.name for e in os.scandir(self.image_dir)}
        missing = [self.image_path(v, i) for v, i in self.items
                   if self.image_path(v, i).name not in present]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"image {missing[0]} is listed by {self.split}_K.json "
                            f"({len(self.ann)} samples x versions {list(self.versions)}) but "
                            f"does not exist{more}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        version, index = self.items[idx]
        path = self.image_path(version, index)
        try:
            image = load_rgb(path)
        except FileNotFoundError:
            raise DataError(f"image {path} does not exist") from None
        except (OSError, RuntimeError, ValueError) as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        K = self.ann.K[index]
        sample: dict[str, Any] = {"index": index, "version": version}
        h, w = image.shape[-2:]
        has_3d = self.ann.xyz is not None
        xyz = self.ann.xyz[index] if has_3d else torch.zeros(NUM_JOINTS, 3)
        kps = tv_tensors.KeyPoints(project(K, xyz) if has_3d else torch.zeros(NUM_JOINTS, 2),
                                   canvas_size=(h, w))
        image = tv_tensors.Image(image)
        size = [self.input_size, self.input_size]
        image, kps = TF.resize(image, size, antialias=True), TF.resize(kps, size)
        rot = torch.eye(3)
        if self.augment.geometric:
            image, kps, rot = self._affine(image, kps)
        if self.color is not None:
            image = self.color(image)
        image = TF.to_dtype(image, torch.float32, scale=True)
        sample["image"] = TF.normalize(image, IMAGENET_MEAN, IMAGENET_STD).as_subclass(
            torch.Tensor)
        sample["joints_2d"] = kps.as_subclass(torch.Tensor) / self.input_size * 2.0 - 1.0
        sample["joints_3d"] = xyz @ rot.T
        if self.ann.verts is not None:
            sample["vertices"] = self.ann.verts[index] @ rot.T
        pose, shape, has_mano = torch.zeros(48), torch.zeros(10), False
        if self.ann.mano is not None:
            pose, shape, has_mano = self.ann.mano[index, :48].clone(), \
                self.ann.mano[index, 48:58].clone(), True
            if not torch.equal(rot, torch.eye(3)):
                root = axis_angle_to_matrix(pose[:3])
                pose[:3] = matrix_to_axis_angle(rot @ root)
        sample.update(pose=pose, shape=shape, has_mano=torch.tensor(has_mano),
                      has_3d=torch.tensor(has_3d))
        if self.ann.scale is not None:
            sample["bone_scale"] = self.ann.scale[index]
        return sample

    def _affine(self, image: tv_tensors.Image, kps: tv_tensors.KeyPoints):
        a = self.augment
        zoom = 1.0 + random.uniform(-a.scale, a.scale)
        angle = random.uniform(-a.rotation, a.rotation)
        shift = [round(random.uniform(-a.translate, a.translate) * self.input_size)
                 for _ in range(2)]
        kwargs = dict(angle=angle, translate=shift, scale=zoom, shear=[0.0, 0.0])
        image = TF.affine(image, interpolation=v2.InterpolationMode.BILINEAR, **kwargs)
        kps = TF.affine(kps, **kwargs)
        return image, kps, rotation_z(angle)


class ImageListDataset(Dataset):
    """Plain images for ``fastvit hand predict``: each is resized to ``input_size``
    (FreiHAND-style crops centred on one right hand are expected)."""

    def __init__(self, paths: list[Path], input_size: int) -> None:
        self.paths, self.input_size = list(paths), int(input_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        path = self.paths[idx]
        try:
            image = load_rgb(path)
        except (OSError, RuntimeError, ValueError) as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        h, w = image.shape[-2:]
        image = TF.resize(image, [self.input_size, self.input_size], antialias=True)
        image = TF.to_dtype(image, torch.float32, scale=True)
        return {"image": TF.normalize(image, IMAGENET_MEAN, IMAGENET_STD), "index": idx,
                "original_size": torch.tensor([h, w])}
