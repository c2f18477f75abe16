"""Batch mixing (MixUp / CutMix) with label smoothing, on torchvision v2.

The recipe mixes each batch with probability ``prob``, choosing CutMix with
probability ``switch_prob`` and MixUp otherwise, and trains on label-smoothed
soft targets with a soft-target cross entropy. Smoothing is applied to the
one-hot labels before mixing; because both are linear this equals smoothing the
mixed targets: ``mix(smooth(y)) = smooth(mix(y))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from fastvit.errors import ConfigError


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot targets with ``1 - smoothing + smoothing / K`` on the true class and
    ``smoothing / K`` elsewhere (the convention of ``F.cross_entropy(label_smoothing=)``)."""
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"label smoothing must be in [0, 1), got {smoothing}")
    off = smoothing / num_classes
    target = torch.full((labels.shape[0], num_classes), off, dtype=dtype, device=labels.device)
    return target.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


class SoftTargetCrossEntropy(nn.Module):
    """Mean over the batch of ``-sum_k target_k * log_softmax(logits)_k``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.float())


class MixupCutmix:
    """``(images, labels) -> (images, soft targets)`` for a training batch.

    ``labels`` are class indices of shape (B,). With probability ``prob`` the
    batch is mixed: CutMix with probability ``switch_prob``, else MixUp (an
    alpha of 0 disables that kind). Targets are always label-smoothed
    probabilities of shape (B, num_classes). ``last_mode`` records what the
    latest call did ("mixup", "cutmix" or "none") for logging and tests.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5,
                 label_smoothing: float = 0.1) -> None:
        if num_classes < 2:
            raise ConfigError(f"mixing needs at least 2 classes, got {num_classes}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"mixing {name} must be in [0, 1], got {value}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError("mixup/cutmix alpha must be >= 0")
        self.num_classes, self.prob, self.switch_prob = num_classes, prob, switch_prob
        self.label_smoothing = label_smoothing
        self.mixup = (v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)
                      if mixup_alpha > 0 else None)
        self.cutmix = (v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)
                       if cutmix_alpha > 0 else None)
        self.last_mode = "none"

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup is not None or self.cutmix is not None)

    def _choose(self) -> str:
        if not self.active or float(torch.rand(())) >= self.prob:
            return "none"
        if self.mixup is None:
            return "cutmix"
        if self.cutmix is None:
            return "mixup"
        return "cutmix" if float(torch.rand(())) < self.switch_prob else "mixup"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        mode = self._choose()
        self.last_mode = mode
        if mode == "none":
            return images, targets
        transform = self.mixup if mode == "mixup" else self.cutmix
        return transform(images, targets)

    def __repr__(self) -> str:
        return (f"MixupCutmix(num_classes={self.num_classes}, mixup={self.mixup}, "
                f"cutmix={self.cutmix}, prob={self.prob}, switch_prob={self.switch_prob}, "
                f"label_smoothing={self.label_smoothing})")
