"""The FastViT network, its seven variants and the model factory.

A FastViT is a stride-4 stem, four stages (downsample -> optional positional
encoding -> blocks) and a head (a 3x3 depthwise MobileOne expansion to twice
the width with squeeze-excite, global average pooling and a linear layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from fastvit.layers import (
    AttentionBlock,
    MobileOneBlock,
    PatchEmbed,
    RepCPE,
    RepMixerBlock,
    make_stem,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VariantSpec:
    """One row of the paper's variant table (PAPER.md section 1)."""

    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    mlp_ratio: float
    stage4_attention: bool
    layer_scale_init: float = 1e-5
    crop_pct: float = 0.9
    recipe_drop_path: float = 0.0  # the paper's training value; the factory default is 0
    published: dict[str, float] = field(default_factory=dict)


VARIANTS: dict[str, VariantSpec] = {
    "fastvit_t8": VariantSpec((2, 2, 4, 2), (48, 96, 192, 384), 3, False,
                              published=dict(top1=76.2, top1_distilled=77.2, gmacs=0.69)),
    "fastvit_t12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 3, False,
                               published=dict(top1=79.3, top1_distilled=80.3, gmacs=1.39)),
    "fastvit_s12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 4, False,
                               published=dict(top1=79.9, top1_distilled=81.1, gmacs=1.79)),
    "fastvit_sa12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 4, True,
                                recipe_drop_path=0.1,
                                published=dict(top1=80.9, top1_distilled=81.9, gmacs=1.94)),
    "fastvit_sa24": VariantSpec((4, 4, 12, 4), (64, 128, 256, 512), 4, True,
                                recipe_drop_path=0.1,
                                published=dict(top1=82.7, top1_distilled=83.4, gmacs=3.76)),
    "fastvit_sa36": VariantSpec((6, 6, 18, 6), (64, 128, 256, 512), 4, True, 1e-6, 0.95, 0.2,
                                published=dict(top1=83.6, top1_distilled=84.2, gmacs=5.59)),
    "fastvit_ma36": VariantSpec((6, 6, 18, 6), (76, 152, 304, 608), 4, True, 1e-6, 0.95, 0.35,
                                published=dict(top1=83.9, top1_distilled=84.6, gmacs=7.82)),
}


def list_models() -> list[str]:
    """Names of all FastViT variants, smallest first."""
    return list(VARIANTS)


class FastVitStage(nn.Module):
    """Downsample (stages 2-4) -> positional encoding (SA/MA stage 4) -> blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, attention: bool, mlp_ratio: float,
                 drop_path: list[float], layer_scale_init: float, downsample: bool,
                 pos_emb: bool, lkc_act: bool, drop: float, inference_mode: bool) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = (PatchEmbed(in_dim, dim, lkc_act, inference_mode) if downsample
                           else nn.Identity())
        self.pos_emb = RepCPE(dim, 7, inference_mode) if pos_emb else nn.Identity()
        if attention:
            blocks = [AttentionBlock(dim, mlp_ratio, dp, layer_scale_init, drop)
                      for dp in drop_path]
        else:
            blocks = [RepMixerBlock(dim, mlp_ratio, dp, layer_scale_init, drop, inference_mode)
                      for dp in drop_path]
        assert len(blocks) == depth
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_emb(self.downsample(x))
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            for block in self.blocks:
                x = grad_checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> linear."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)


class FastVit(nn.Module):
    """FastViT classifier / backbone.

    ``features_only=True`` drops the head and makes ``forward`` return the four
    stage outputs (strides 4, 8, 16, 32), the last one taken after the stage-4
    blocks.
    """

    def __init__(self, spec: VariantSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 layer_scale_init: float | None = None, lkc_act: bool = False,
                 inference_mode: bool = False, features_only: bool = False,
                 variant: str = "fastvit") -> None:
        super().__init__()
        self.variant, self.spec = variant, spec
        self.num_classes, self.in_chans = num_classes, in_chans
        self.inference_mode, self.features_only = inference_mode, features_only
        ls_init = spec.layer_scale_init if layer_scale_init is None else layer_scale_init
        widths = spec.widths
        self.stem = make_stem(in_chans, widths[0], inference_mode)
        dpr = torch.linspace(0, drop_path_rate, sum(spec.depths), device="cpu").tolist()
        stages, start = [], 0
        for i, (depth, dim) in enumerate(zip(spec.depths, widths, strict=True)):
            last = i == 3
            stages.append(FastVitStage(
                widths[max(i - 1, 0)], dim, depth, attention=last and spec.stage4_attention,
                mlp_ratio=spec.mlp_ratio, drop_path=dpr[start:start + depth],
                layer_scale_init=ls_init, downsample=i > 0,
                pos_emb=last and spec.stage4_attention, lkc_act=lkc_act, drop=proj_drop_rate,
                inference_mode=inference_mode))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=w, reduction=4 * 2 ** i, module=f"stages.{i}")
                             for i, w in enumerate(widths)]
        self.num_features = 2 * widths[-1]
        if features_only:
            self.final_conv, self.head = None, None
        else:
            self.final_conv = MobileOneBlock(widths[-1], self.num_features, 3, groups=widths[-1],
                                             use_se=True, inference_mode=inference_mode)
            self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        self.default_cfg = default_cfg(variant, spec, num_classes)
        self.apply(_init_weights)

    # -- the forward passes -------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.final_conv(x) if self.final_conv is not None else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("a features_only model has no classification head")
        return self.head(x, pre_logits=pre_logits)

    def forward_intermediates(self, x: torch.Tensor, indices: tuple[int, ...] = (0, 1, 2, 3),
                              intermediates_only: bool = True
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at strides 4, 8, 16, 32 (the 4th after the stage-4 blocks).

        With ``intermediates_only=False`` also returns the final features
        (after ``final_conv``) as the first element of a pair.
        """
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"input sides must be multiples of 32 for 4-level features, "
                             f"got {h}x{w}")
        bad = [i for i in indices if i not in range(4)]
        if bad:
            raise ValueError(f"feature indices must be in 0..3, got {bad}")
        feats = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in indices:
                feats.append(x)
        if intermediates_only:
            return feats
        final = self.final_conv(x) if self.final_conv is not None else x
        return final, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))

    # -- utilities ----------------------------------------------------------

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear classifier (e.g. for fine-tuning on a new label set)."""
        if self.head is None:
            raise RuntimeError("a features_only model has no classification head")
        self.num_classes = num_classes
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(fc)
        self.head.fc = fc.to(next(self.parameters()).device)
        self.default_cfg = {**self.default_cfg, "num_classes": num_classes}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def reparameterize(self) -> FastVit:
        """Fuse in place; see :func:`fastvit.reparam.reparameterize`."""
        from fastvit.reparam import reparameterize

        return reparameterize(self, inplace=True)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def default_cfg(variant: str, spec: VariantSpec, num_classes: int) -> dict[str, Any]:
    """Evaluation defaults of a variant: input 256, bicubic, crop ratio, ImageNet stats."""
    return {
        "variant": variant,
        "input_size": (3, 256, 256),
        "interpolation": "bicubic",
        "crop_pct": spec.crop_pct,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "num_classes": num_classes,
    }


def create_model(name: str, *, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0, inference_mode: bool = False,
                 checkpoint: str | Path | dict | None = None, **overrides: Any) -> FastVit:
    """Build a FastViT variant by name, optionally loading weights of any supported layout.

    ``overrides`` go to :class:`FastVit` (``features_only``, ``drop_rate``,
    ``lkc_act``, ``layer_scale_init``...). A fused checkpoint loaded into a
    train-time model fuses the model first (see :func:`fastvit.load_checkpoint`).
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown FastViT variant {name!r}; choose one of: "
                         f"{', '.join(list_models())}")
    model = FastVit(VARIANTS[name], num_classes=num_classes, in_chans=in_chans,
                    drop_path_rate=drop_path_rate, inference_mode=inference_mode,
                    variant=name, **overrides)
    if checkpoint is not None:
        from fastvit.checkpoint import load_checkpoint

        model = load_checkpoint(model, checkpoint)
    return model


def _factory(name: str):
    def build(**kwargs: Any) -> FastVit:
        return create_model(name, **kwargs)

    build.__name__ = name
    build.__doc__ = f"Build {name} (see :func:`create_model` for arguments)."
    return build


fastvit_t8 = _factory("fastvit_t8")
fastvit_t12 = _factory("fastvit_t12")
fastvit_s12 = _factory("fastvit_s12")
fastvit_sa12 = _factory("fastvit_sa12")
fastvit_sa24 = _factory("fastvit_sa24")
fastvit_sa36 = _factory("fastvit_sa36")
fastvit_ma36 = _factory("fastvit_ma36")
