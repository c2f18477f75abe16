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
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from fastvit.models import IMAGENET_MEAN, IMAGENET_STD
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
                    fpn_channels: int = FPN_CHANNELS, box_head_dim: int = 1024,
                    mask_head_channels: int = 256, rois_per_image: int = 512,
                    rpn_proposals_train: int = 2000, rpn_proposals_test: int = 1000,
                    detections_per_img: int = 100) -> MaskRCNN:
    """Mask R-CNN for ``num_classes`` object classes (background is added here).

    ``pretrained`` is an ImageNet classification checkpoint of any supported
    layout; its head is dropped. Images are resized by the model so that the
    shorter side is ``min_size`` (longer side at most ``max_size``) and padded to a
    multiple of 32, as FastViT's four-level features require. The head sizes
    default to torchvision's (= mmdet's) Mask R-CNN; smaller values only serve
    quick CPU runs.
    """
    if min_size < 32:
        raise ValueError(f"min_size must be at least 32, got {min_size}")
    body = FastVitBackbone(variant, pretrained, frozen_stages=frozen_stages,
                           norm_eval=norm_eval, drop_path_rate=drop_path_rate)
    backbone = FastVitFPN(body, fpn_channels)
    resolution = 7  # RoIAlign output of the box branch (torchvision default)
    return MaskRCNN(
        backbone, num_classes=None, min_size=min_size, max_size=max_size,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), size_divisible=32,
        rpn_pre_nms_top_n_train=rpn_proposals_train, rpn_post_nms_top_n_train=rpn_proposals_train,
        rpn_pre_nms_top_n_test=rpn_proposals_test, rpn_post_nms_top_n_test=rpn_proposals_test,
        box_head=TwoMLPHead(fpn_channels * resolution ** 2, box_head_dim),
        box_predictor=FastRCNNPredictor(box_head_dim, num_classes + 1),
        box_batch_size_per_image=rois_per_image, box_detections_per_img=detections_per_img,
        mask_head=MaskRCNNHeads(fpn_channels, [mask_head_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels,
                                         num_classes + 1))
