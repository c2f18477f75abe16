"""The FastViT network, built from one row of the variant table.

A FastViT is a stride-4 stem, four (MCi3/4: five) stages (downsample -> optional
positional encoding -> blocks) and a head (a 3x3 depthwise MobileOne expansion to
twice the width with squeeze-excite, global average pooling and a linear layer).
:class:`VariantSpec` is the shape of a row; the rows themselves (the paper's seven,
MCi0-4) live in :mod:`fastvit.models.variants`.
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

FAMILIES = ("paper", "mobileclip")
ATTENTION_NORMS = ("batchnorm", "layernorm")


@dataclass(frozen=True)
class VariantSpec:
    """One row of the variant table (the paper's Table 1 and Section 4, or an MCi tower).

    Architecture: ``depths``/``widths`` have one entry per stage (4, or 5 for MCi3/4:
    strides 4..64; stage 1 never downsamples). ``attention_stages`` (0-based) use
    self-attention blocks, each such stage opening with its own RepCPE 7x7 positional
    encoding (the paper's SA/MA variants: stage 4 only). ``attention_norm`` is
    the norm before attention (``"layernorm"``: over channels, eps 1e-5).
    ``se_downsample_stages`` put squeeze-excite in the large-kernel conv of those
    stages' patch embedding; ``lkc_act`` applies the activation of that conv (the
    paper's release computed and dropped it); ``stem_scale_branch=False`` drops the
    stem's 1x1 branches. ``num_classes`` is the default classifier size (the CLIP
    embedding size for MCi), ``mean``/``std``/``crop_pct``/``interpolation`` the
    evaluation preprocessing at ``image_size``.

    The ``recipe_*`` fields are what the packaged training recipes of a paper variant
    (``fastvit_<v>`` and ``fastvit_<v>_distill``) change from the shared ImageNet-1k
    recipe: the official release's training and distillation commands (apple/ml-fastvit).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    mlp_ratio: float
    attention_stages: tuple[int, ...] = ()
    layer_scale_init: float = 1e-5
    crop_pct: float = 0.9
    recipe_drop_path: float = 0.0  # the paper's training value; the factory default is 0
    recipe_mixup: float = 0.2
    recipe_distill_drop_path: float = 0.0
    recipe_distill_mixup: float = 0.2
    published: dict[str, float] = field(default_factory=dict)
    family: str = "paper"
    attention_norm: str = "batchnorm"
    se_downsample_stages: tuple[int, ...] = ()
    lkc_act: bool = False
    stem_scale_branch: bool = True
    num_classes: int = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    image_size: int = 256

    def __post_init__(self) -> None:
        n = len(self.depths)
        if n not in (4, 5) or len(self.widths) != n:
            raise ValueError(f"a variant has 4 or 5 stages with one width each, got depths "
                             f"{self.depths} and widths {self.widths}")
        stages = set(self.attention_stages) | set(self.se_downsample_stages)
        if not stages <= set(range(n)) or 0 in self.se_downsample_stages:
            raise ValueError(f"stage indices must be in 0..{n - 1} (stage 0 has no patch "
                             f"embedding), got {sorted(stages)}")
        if self.attention_norm not in ATTENTION_NORMS or self.family not in FAMILIES:
            raise ValueError(f"attention_norm is one of {ATTENTION_NORMS} and family one of "
                             f"{FAMILIES}, got {self.attention_norm!r}, {self.family!r}")

    @property
    def stage4_attention(self) -> bool:
        """Whether the fourth stage mixes with attention (the paper's SA/MA variants)."""
        return 3 in self.attention_stages

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def reductions(self) -> tuple[int, ...]:
        """Stride of each stage's output (4, 8, 16, 32 and 64 for a fifth stage)."""
        return tuple(4 * 2 ** i for i in range(self.num_stages))

    @property
    def mixers(self) -> list[str]:
        return ["Attention" if i in self.attention_stages else "RepMixer"
                for i in range(self.num_stages)]


class FastVitStage(nn.Module):
    """Downsample (stages 2+) -> positional encoding (attention stages) -> blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, attention: bool, mlp_ratio: float,
                 drop_path: list[float], layer_scale_init: float, downsample: bool,
                 pos_emb: bool, lkc_act: bool, drop: float, inference_mode: bool,
                 se_downsample: bool = False, attention_norm: str = "batchnorm") -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = (PatchEmbed(in_dim, dim, lkc_act, inference_mode, se_downsample)
                           if downsample else nn.Identity())
        self.pos_emb = RepCPE(dim, 7, inference_mode) if pos_emb else nn.Identity()
        if attention:
            blocks = [AttentionBlock(dim, mlp_ratio, dp, layer_scale_init, drop, attention_norm)
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
    outputs listed in ``out_indices`` (default: every stage; strides 4, 8, 16, 32
    and 64 for a fifth stage), each taken after its stage's blocks;
    ``feature_info`` then describes them. ``lkc_act`` (default: the row's) switches
    the activation of the patch embeddings' large-kernel conv.
    """

    def __init__(self, spec: VariantSpec, *, num_classes: int | None = None, in_chans: int = 3,
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 layer_scale_init: float | None = None, lkc_act: bool | None = None,
                 inference_mode: bool = False, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, variant: str = "fastvit") -> None:
        super().__init__()
        self.variant, self.spec = variant, spec
        num_classes = spec.num_classes if num_classes is None else num_classes
        self.num_classes, self.in_chans = num_classes, in_chans
        self.inference_mode, self.features_only = inference_mode, features_only
        self.num_stages = n = spec.num_stages
        self.out_indices = tuple(take_indices(out_indices, n))
        ls_init = spec.layer_scale_init if layer_scale_init is None else layer_scale_init
        lkc_act = spec.lkc_act if lkc_act is None else lkc_act
        widths = spec.widths
        self.stem = make_stem(in_chans, widths[0], inference_mode, spec.stem_scale_branch)
        dpr = torch.linspace(0, drop_path_rate, sum(spec.depths), device="cpu").tolist()
        stages, start = [], 0
        for i, (depth, dim) in enumerate(zip(spec.depths, widths, strict=True)):
            attention = i in spec.attention_stages
            stages.append(FastVitStage(
                widths[max(i - 1, 0)], dim, depth, attention=attention,
                mlp_ratio=spec.mlp_ratio, drop_path=dpr[start:start + depth],
                layer_scale_init=ls_init, downsample=i > 0, pos_emb=attention,
                lkc_act=lkc_act, drop=proj_drop_rate, inference_mode=inference_mode,
                se_downsample=i in spec.se_downsample_stages,
                attention_norm=spec.attention_norm))
            start += depth
        self.stages = nn.Sequential(*stages)
        stage_info = [dict(num_chs=w, reduction=r, module=f"stages.{i}", index=i)
                      for i, (w, r) in enumerate(zip(widths, spec.reductions, strict=True))]
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
        """Stage outputs at strides 4, 8, 16, 32 (and 64), each after its stage's blocks.

        timm's signature: ``indices`` is None (all stages), an int (the last n) or
        stage indices; ``stop_early`` skips the stages after the last one taken.
        Returns ``(final features after final_conv, maps)``, or only the maps with
        ``intermediates_only=True``. ``norm`` is accepted for timm compatibility
        (FastViT has no final norm).
        """
        del norm
        if output_fmt != "NCHW":
            raise ValueError(f"FastViT features are NCHW, got output_fmt={output_fmt!r}")
        h, w = x.shape[-2:]
        stride = self.spec.reductions[-1]
        if h % stride or w % stride:
            raise ValueError(f"input sides must be multiples of {stride} for "
                             f"{self.num_stages}-level features, got {h}x{w}")
        take = take_indices(indices, self.num_stages)
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

    The paper's protocol: 256x256, bicubic resize of the shorter side to
    ``256 / crop_pct`` then a centre crop, ImageNet mean/std; MCi towers use their
    row's mean/std and crop (timm's ``fastvit_mci*`` cfgs). timm's
    ``resolve_data_config`` / ``create_transform`` read these keys.
    """
    size = spec.image_size
    first_conv = (("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv") if spec.stem_scale_branch
                  else "stem.0.conv_kxk.0.conv")
    return {
        "architecture": variant,
        "tag": None,
        "input_size": (3, size, size),
        "pool_size": (size // spec.reductions[-1],) * 2,
        "interpolation": spec.interpolation,
        "crop_pct": spec.crop_pct,
        "crop_mode": "center",
        "mean": spec.mean,
        "std": spec.std,
        "num_classes": num_classes,
        "first_conv": first_conv,
        "classifier": "head.fc",
    }
