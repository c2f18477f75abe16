"""FastViT as a multi-scale feature backbone for dense tasks.

Detection, segmentation and hand-mesh heads all need the same thing: the four
stage outputs (strides 4, 8, 16, 32) of an ImageNet-pretrained FastViT, with
BatchNorm frozen because dense-task batches (2 images per GPU) are far too
small to estimate BN statistics. This module is that one shared wrapper.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from fastvit.pipeline import load_model


class FastVitBackbone(nn.Module):
    """Four-level FastViT feature extractor with stage freezing and frozen BN.

    Args:
        name: variant name (``fastvit_t8`` ... ``fastvit_ma36``).
        checkpoint: ImageNet weights in any layout :func:`fastvit.load_model`
            reads (our safetensors, the official release, timm; train-time form
            to train, fused with ``inference_mode``). The classification head in
            it is ignored.
        frozen_stages: ``-1`` trains everything; ``0`` freezes the stem; ``k >= 1``
            freezes the stem and stages ``1..k`` (parameters fixed, modules kept in
            eval mode), as mmdet/torchvision do for ResNet.
        norm_eval: BatchNorm semantics of ``torchvision.ops.FrozenBatchNorm2d``:
            every BN layer stays in eval mode (running statistics never update) and
            its affine parameters are not trained.
        out_indices: which stages to return (0..3 -> strides 4, 8, 16, 32).
        drop_path_rate: stochastic depth of the backbone blocks.
        inference_mode: build the fused (reparameterized) network, e.g. to load a
            fused checkpoint for deployment.

    ``forward`` returns an ``OrderedDict`` ``{"0": stride-4 map, ..., "3": stride-32
    map}`` (keys are the stage indices as strings, the format torchvision's
    :class:`~torchvision.ops.FeaturePyramidNetwork` expects). Input sides must be
    multiples of 32.
    """

    def __init__(self, name: str, checkpoint: str | Path | None = None, *,
                 frozen_stages: int = -1, norm_eval: bool = True,
                 out_indices: tuple[int, ...] = (0, 1, 2, 3), drop_path_rate: float = 0.0,
                 inference_mode: bool = False) -> None:
        super().__init__()
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f"out_indices must be a non-empty subset of 0..3, got {out_indices}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        self.body = load_model(name, pretrained=checkpoint, features_only=True,
                               fused=inference_mode, fold_bn=False,
                               drop_path_rate=drop_path_rate).model
        self.variant = name
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        info = self.body.feature_info
        self.channels = [info[i]["num_chs"] for i in out_indices]
        self.strides = [info[i]["reduction"] for i in out_indices]
        self._freeze()

    # -- freezing -------------------------------------------------------------

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.body.stem, *list(self.body.stages)[: self.frozen_stages]]

    def _bn_layers(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        if self.norm_eval:
            for bn in self._bn_layers():
                for p in bn.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> FastVitBackbone:
        """Switch mode, keeping frozen stages and (with ``norm_eval``) BN in eval mode."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for bn in self._bn_layers():
                    bn.eval()
        return self

    # -- forward --------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body.forward_intermediates(x, self.out_indices, intermediates_only=True)
        return OrderedDict((str(i), f) for i, f in zip(self.out_indices, feats, strict=True))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.body.set_grad_checkpointing(enable)
