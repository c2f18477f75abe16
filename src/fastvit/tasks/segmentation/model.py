"""Semantic FPN (Kirillov et al., 2019) on a FastViT backbone.

Neck: torchvision's FPN (1x1 laterals, top-down nearest-upsample-and-add, 3x3
output convs, 256 channels). Head (written here, as in mmseg's ``FPNHead``):
each pyramid level goes through conv3x3-norm-ReLU blocks, each followed by a 2x
bilinear upsampling, until it reaches stride 4 (stride 4: one block, strides 8/16/32:
1/2/3 blocks); the four maps are summed, dropped out and classified by a 1x1
conv; logits are upsampled to the input size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from fastvit.tasks.backbone import FastVitBackbone


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "gn":
        return nn.GroupNorm(min(32, channels), channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"head_norm must be 'gn' or 'bn', got {kind!r}")


class ConvNormReLU(nn.Sequential):
    def __init__(self, in_chs: int, out_chs: int, norm: str) -> None:
        super().__init__(nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False),
                         _norm(norm, out_chs), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """Merge FPN levels at stride 4 and classify every pixel."""

    def __init__(self, in_channels: int, channels: int, num_classes: int,
                 strides: tuple[int, ...] = (4, 8, 16, 32), norm: str = "gn",
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            steps = max(1, int(math.log2(stride // strides[0])))
            layers: list[nn.Module] = []
            for k in range(steps):
                layers.append(ConvNormReLU(in_channels if k == 0 else channels, channels, norm))
                if stride != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear",
                                              align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](feats[0])
        for head, feat in zip(self.scale_heads[1:], feats[1:], strict=True):
            out = out + F.interpolate(head(feat), size=out.shape[-2:], mode="bilinear",
                                      align_corners=False)
        return self.classifier(self.dropout(out))


class SemanticFPN(nn.Module):
    """FastViT -> FPN -> Semantic FPN head; ``forward`` returns logits at input size."""

    def __init__(self, backbone: FastVitBackbone, num_classes: int, *, fpn_channels: int = 256,
                 head_channels: int = 128, head_norm: str = "gn", dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = FeaturePyramidNetwork(backbone.channels, fpn_channels)
        self.head = SemanticFPNHead(fpn_channels, head_channels, num_classes,
                                    tuple(backbone.strides), head_norm, dropout)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = list(self.neck(self.backbone(x)).values())
        logits = self.head(feats)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_semantic_fpn(variant: str, num_classes: int, *, pretrained: str | Path | None = None,
                       frozen_stages: int = -1, norm_eval: bool = True,
                       drop_path_rate: float = 0.0, fpn_channels: int = 256,
                       head_channels: int = 128, head_norm: str = "gn",
                       dropout: float = 0.1) -> SemanticFPN:
    """Semantic FPN on any FastViT variant, optionally from an ImageNet checkpoint."""
    backbone = FastVitBackbone(variant, pretrained, frozen_stages=frozen_stages,
                               norm_eval=norm_eval, drop_path_rate=drop_path_rate)
    return SemanticFPN(backbone, num_classes, fpn_channels=fpn_channels,
                       head_channels=head_channels, head_norm=head_norm, dropout=dropout)
