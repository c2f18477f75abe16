"""Mask R-CNN with a FastViT + FPN backbone, all from torchvision but the backbone.

The FPN takes the four FastViT stage maps (strides 4-32), outputs 256 channels
each plus a stride-64 max-pooled level, exactly the interface torchvision's
``MaskRCNN`` expects from ``BackboneWithFPN`` (keys ``"0"``..``"3"``, ``"pool"``),
so its default anchors (32-512) and RoI poolers apply unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from fastvit.model import IMAGENET_MEAN, IMAGENET_STD
from fastvit.tasks.backbone import FastVitBackbone

FPN_CHANNELS = 256


class FastVitFPN(nn.Module):
    """FastViT body + torchvision FPN; ``out_channels`` as torchvision requires."""

    def __init__(self, body: FastVitBackbone, out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def build_mask_rcnn(variant: str, num_classes: int, *, pretrained: str | Path | None = None,
                    frozen_stages: int = -1, norm_eval: bool = True,
                    drop_path_rate: float = 0.0, min_size: int = 800, max_size: int = 1333,
                    detections_per_img: int = 100) -> MaskRCNN:
    """Mask R-CNN for ``num_classes`` object classes (background is added here).

    ``pretrained`` is an ImageNet classification checkpoint of any supported
    layout; its head is dropped. Images are resized by the model so that the
    shorter side is ``min_size`` (longer side at most ``max_size``) and padded to a
    multiple of 32, as FastViT's four-level features require.
    """
    if min_size < 32:
        raise ValueError(f"min_size must be at least 32, got {min_size}")
    body = FastVitBackbone(variant, pretrained, frozen_stages=frozen_stages,
                           norm_eval=norm_eval, drop_path_rate=drop_path_rate)
    return MaskRCNN(FastVitFPN(body), num_classes=num_classes + 1, min_size=min_size,
                    max_size=max_size, image_mean=list(IMAGENET_MEAN),
                    image_std=list(IMAGENET_STD), size_divisible=32,
                    box_detections_per_img=detections_per_img)
