"""Training and evaluation transforms of the FastViT ImageNet recipe (torchvision v2).

Train: RandomResizedCrop (bicubic) -> horizontal flip -> RandAugment
``rand-m9-mstd0.5`` -> float in [0, 1] -> normalize -> RandomErasing(0.25).
The eval transform is :func:`fastvit.pipeline.eval_transform` (it follows the
model's ``pretrained_cfg``); this module only supplies its resize rule.

Inputs are uint8 ``(3, H, W)`` tensors (what :func:`fastvit.data.load_rgb`
returns) or PIL images; outputs are normalized float32 tensors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from fastvit.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NoisyRandAugment(v2.RandAugment):
    """``v2.RandAugment`` whose magnitude is drawn per call from N(magnitude, std).

    The recipe's ``rand-m9-mstd0.5`` (timm notation) uses a 0..10 magnitude scale
    where 10 is each operation's maximum, and perturbs the magnitude with Gaussian
    noise of std 0.5 on every call. torchvision's RandAugment indexes a fixed table
    of ``num_magnitude_bins`` levels with one integer, so this wrapper keeps the
    0..10 scale (``num_levels = 11``), builds a table ``resolution`` times finer
    (0.1 steps by default) and picks, per call, the entry nearest to
    ``clip(N(magnitude, magnitude_std), 0, num_levels - 1)``. The draw uses
    ``torch``'s RNG, so DataLoader worker seeding makes it reproducible.
    The operation set is torchvision's (identity, shear, translate, rotate,
    brightness, color, contrast, sharpness, posterize, solarize, autocontrast,
    equalize), which differs slightly from timm's list.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                 num_levels: int = 11, resolution: int = 10,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR,
                 fill: Any = None) -> None:
        if not 0 <= magnitude <= num_levels - 1:
            raise ConfigError(f"RandAugment magnitude {magnitude} outside 0..{num_levels - 1}")
        super().__init__(num_ops=num_ops, magnitude=round(magnitude * resolution),
                         num_magnitude_bins=(num_levels - 1) * resolution + 1,
                         interpolation=interpolation, fill=fill)
        self.mean_magnitude, self.magnitude_std = float(magnitude), float(magnitude_std)
        self.num_levels, self.resolution = num_levels, resolution
        self.last_magnitude = float(magnitude)

    def sample_magnitude(self) -> float:
        """One draw of the magnitude on the 0..num_levels-1 scale (0.1 steps)."""
        level = self.mean_magnitude
        if self.magnitude_std > 0:
            level += self.magnitude_std * float(torch.randn(()))
        level = min(max(level, 0.0), self.num_levels - 1.0)
        return round(level * self.resolution) / self.resolution

    def forward(self, *inputs: Any) -> Any:
        self.last_magnitude = self.sample_magnitude()
        self.magnitude = round(self.last_magnitude * self.resolution)
        return super().forward(*inputs)

    def extra_repr(self) -> str:
        return (f"num_ops={self.num_ops}, magnitude={self.mean_magnitude}, "
                f"magnitude_std={self.magnitude_std}, levels=0..{self.num_levels - 1}")


def parse_rand_augment(spec: str) -> dict[str, float]:
    """Parse timm-style ``rand-m9-mstd0.5[-n2]`` into NoisyRandAugment arguments."""
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ConfigError(f"RandAugment spec must start with 'rand', got {spec!r}")
    out: dict[str, float] = {"magnitude": 9.0, "magnitude_std": 0.0, "num_ops": 2}
    keys = {"m": "magnitude", "mstd": "magnitude_std", "n": "num_ops"}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|m|n)(\d+(?:\.\d+)?)", part)
        if match is None:
            raise ConfigError(f"cannot parse {part!r} in RandAugment spec {spec!r} "
                              f"(known: m<magnitude>, mstd<std>, n<num ops>)")
        out[keys[match.group(1)]] = float(match.group(2))
    out["num_ops"] = int(out["num_ops"])
    return out


def interpolation_mode(name: str | InterpolationMode) -> InterpolationMode:
    if isinstance(name, InterpolationMode):
        return name
    try:
        return InterpolationMode(name.lower())
    except ValueError:
        raise ConfigError(f"unknown interpolation {name!r}; use bicubic, bilinear or "
                          f"nearest") from None


def _fill(mean: Sequence[float]) -> tuple[int, ...]:
    return tuple(round(255 * m) for m in mean)


def build_train_transform(image_size: int = 256, *, interpolation: str = "bicubic",
                          hflip: float = 0.5, rand_augment: str | None = "rand-m9-mstd0.5",
                          re_prob: float = 0.25, mean: Sequence[float] = IMAGENET_MEAN,
                          std: Sequence[float] = IMAGENET_STD,
                          scale: tuple[float, float] = (0.08, 1.0),
                          ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> v2.Compose:
    """The paper's ImageNet training augmentation (RandAugment in timm's notation)."""
    mode = interpolation_mode(interpolation)
    steps: list[Any] = [
        v2.RandomResizedCrop(image_size, scale=scale, ratio=ratio, interpolation=mode,
                             antialias=True),
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if rand_augment:
        # Geometric ops on tensors support nearest/bilinear only; timm also uses bilinear here.
        steps.append(NoisyRandAugment(**parse_rand_augment(rand_augment), fill=_fill(mean)))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if re_prob > 0:
        # timm's "pixel" mode: the erased box gets per-pixel N(0, 1) noise (normalized space).
        steps.append(v2.RandomErasing(p=re_prob, value="random"))
    return v2.Compose(steps)


def eval_resize_size(image_size: int, crop_pct: float) -> int:
    """Shorter-side resize before the centre crop: ``floor(image_size / crop_pct)``."""
    if not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return math.floor(image_size / crop_pct)
