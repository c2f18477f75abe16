"""The FastViT network and its variant table (one row per variant).

A FastViT is a stride-4 stem, four stages (downsample -> optional positional
encoding -> blocks) and a head (a 3x3 depthwise MobileOne expansion to twice
the width with squeeze-excite, global average pooling and a linear layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from fastvit.models.layers import (
    AttentionBlock,
    MobileOneBlock,
    PatchEmbed,
    RepCPE,
    RepMixerBlock,
    fuse_tree,
    make_stem,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VariantSpec:
    """One row of the variant table (the paper's Table 1 and Section 4).

    The ``recipe_*`` fields are what the packaged training recipes of the variant
    (``fastvit_<v>`` and ``fastvit_<v>_distill``) change from the shared ImageNet-1k
    recipe: the official release's training and distillation commands (apple/ml-fastvit).
    """

    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    mlp_ratio: float
    stage4_attention: bool
    layer_scale_init: float = 1e-5
    crop_pct: float = 0.9
    recipe_drop_path: float = 0.0  # the paper's training value; the factory default is 0
    recipe_mixup: float = 0.2
    recipe_distill_drop_path: float = 0.0
    recipe_distill_mixup: float = 0.2
    published: dict[str, float] = field(default_factory=dict)


VARIANTS: dict[str, VariantSpec] = {
    "fastvit_t8": VariantSpec((2, 2, 4, 2), (48, 96, 192, 384), 3, False,
                              published=dict(top1=76.2, top1_distilled=77.2, gmacs=0.69)),
    "fastvit_t12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 3, False,
                               published=dict(top1=79.3, top1_distilled=80.3, gmacs=1.39)),
    "fastvit_s12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 4, False,
                               published=dict(top1=79.9, top1_distilled=81.1, gmacs=1.79)),
    "fastvit_sa12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 4, True,
                                recipe_drop_path=0.1, recipe_distill_mixup=0.8,
                                published=dict(top1=80.9, top1_distilled=81.9, gmacs=1.94)),
    "fastvit_sa24": VariantSpec((4, 4, 12, 4), (64, 128, 256, 512), 4, True,
                                recipe_drop_path=0.1, recipe_distill_drop_path=0.05,
                                recipe_distill_mixup=0.8,
                                published=dict(top1=82.7, top1_distilled=83.4, gmacs=3.76)),
    "fastvit_sa36": VariantSpec((6, 6, 18, 6), (64, 128, 256, 512), 4, True,
                                layer_scale_init=1e-6, crop_pct=0.95, recipe_drop_path=0.2,
                                recipe_distill_drop_path=0.1, recipe_distill_mixup=0.8,
                                published=dict(top1=83.6, top1_distilled=84.2, gmacs=5.59)),
    "fastvit_ma36": VariantSpec((6, 6, 18, 6), (76, 152, 304, 608), 4, True,
                                layer_scale_init=1e-6, crop_pct=0.95, recipe_drop_path=0.35,
                                recipe_mixup=0.8, recipe_distill_drop_path=0.2,
                                recipe_distill_mixup=0.8,
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
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
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


class FeatureInfo(list):
    """timm-style description of the feature maps a backbone returns.

    A list of ``{"num_chs", "reduction", "module", "index"}`` dicts (one per
    returned map) with timm's accessors, so code written for
    ``timm.create_model(..., features_only=True)`` reads it unchanged.
    """

    def _get(self, key: str, idx: int | Sequence[int] | None) -> Any:
        if idx is None:
            return [info[key] for info in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("module", idx)


def take_indices(indices: int | Sequence[int] | None, num_stages: int = 4) -> list[int]:
    """timm's convention: ``None`` all stages, an int the last ``n``, else those indices."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"cannot take the last {indices} of {num_stages} stages")
        return list(range(num_stages - indices, num_stages))
    picked = [int(i) for i in indices]
    bad = [i for i in picked if i not in range(-num_stages, num_stages)]
    if bad or not picked:
        raise ValueError(f"feature indices must be in 0..{num_stages - 1}, got {list(indices)}")
    return sorted({i % num_stages for i in picked})


class FastVit(nn.Module):
    """FastViT classifier / backbone.

    ``features_only=True`` drops the head and makes ``forward`` return the stage
    outputs listed in ``out_indices`` (strides 4, 8, 16, 32 for 0..3), the last
    one taken after the stage-4 blocks; ``feature_info`` then describes them.
    """

    def __init__(self, spec: VariantSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 layer_scale_init: float | None = None, lkc_act: bool = False,
                 inference_mode: bool = False, features_only: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3), variant: str = "fastvit") -> None:
        super().__init__()
        self.variant, self.spec = variant, spec
        self.num_classes, self.in_chans = num_classes, in_chans
        self.inference_mode, self.features_only = inference_mode, features_only
        self.out_indices = tuple(take_indices(out_indices))
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
        stage_info = [dict(num_chs=w, reduction=4 * 2 ** i, module=f"stages.{i}", index=i)
                      for i, w in enumerate(widths)]
        self.num_features = 2 * widths[-1]
        if features_only:
            self.final_conv, self.head = None, None
            self.feature_info = FeatureInfo(stage_info[i] for i in self.out_indices)
        else:
            self.final_conv = MobileOneBlock(widths[-1], self.num_features, 3, groups=widths[-1],
                                             use_se=True, inference_mode=inference_mode)
            self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
            self.feature_info = FeatureInfo(stage_info)
        self.pretrained_cfg = base_cfg(variant, spec, num_classes)
        self.apply(_init_weights)

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name of :attr:`pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, value: dict[str, Any]) -> None:
        self.pretrained_cfg = value

    # -- the forward passes -------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.final_conv(x) if self.final_conv is not None else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("a features_only model has no classification head")
        return self.head(x, pre_logits=pre_logits)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at strides 4, 8, 16, 32 (the 4th after the stage-4 blocks).

        timm's signature: ``indices`` is None (all four), an int (the last n) or
        stage indices; ``stop_early`` skips the stages after the last one taken.
        Returns ``(final features after final_conv, maps)``, or only the maps with
        ``intermediates_only=True``. ``norm`` is accepted for timm compatibility
        (FastViT has no final norm).
        """
        del norm
        if output_fmt != "NCHW":
            raise ValueError(f"FastViT features are NCHW, got output_fmt={output_fmt!r}")
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"input sides must be multiples of 32 for 4-level features, "
                             f"got {h}x{w}")
        take = take_indices(indices)
        last = max(take) if stop_early or intermediates_only else len(self.stages) - 1
        feats = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages[:last + 1]):
            x = stage(x)
            if i in take:
                feats.append(x)
        if intermediates_only:
            return feats
        if last == len(self.stages) - 1 and self.final_conv is not None:
            x = self.final_conv(x)
        return x, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices, intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    # -- utilities ----------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` for ``num_classes=0``)."""
        if self.head is None:
            raise RuntimeError("a features_only model has no classification head")
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear classifier (e.g. for fine-tuning on a new label set)."""
        if self.head is None:
            raise RuntimeError("a features_only model has no classification head")
        self.num_classes = num_classes
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(fc)
        self.head.fc = fc.to(next(self.parameters()).device)
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def reparameterize(self) -> FastVit:
        """Fuse in place and switch to eval mode (see :func:`fastvit.reparameterize`)."""
        self.eval()
        fuse_tree(self)
        return self


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def base_cfg(variant: str, spec: VariantSpec, num_classes: int) -> dict[str, Any]:
    """timm-style ``pretrained_cfg`` of a variant: how its inputs are prepared.

    256x256, bicubic resize of the shorter side to ``256 / crop_pct`` then a
    centre crop, ImageNet mean/std (the paper's evaluation protocol). timm's
    ``resolve_data_config`` / ``create_transform`` read these keys.
    """
    return {
        "architecture": variant,
        "tag": None,
        "input_size": (3, 256, 256),
        "pool_size": (8, 8),
        "interpolation": "bicubic",
        "crop_pct": spec.crop_pct,
        "crop_mode": "center",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "num_classes": num_classes,
        "first_conv": ("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv"),
        "classifier": "head.fc",
    }
