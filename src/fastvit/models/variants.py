"""The variant table: one :class:`VariantSpec` row per variant.

Two families share the network. ``"paper"``: the seven ImageNet-1k classifiers of
FastViT (Vasu et al., ICCV 2023; apple/ml-fastvit), with published accuracies,
weights and training recipes. ``"mobileclip"``: the MCi image towers of MobileCLIP
(Vasu et al., CVPR 2024) and MobileCLIP2 (Faghri et al., TMLR 2025; apple/ml-mobileclip,
timm's ``fastvit_mci0..4``), whose classifier is the CLIP projection.
"""

from __future__ import annotations

from typing import Any

from fastvit.models.network import FAMILIES, IMAGENET_MEAN, IMAGENET_STD, VariantSpec

__all__ = ["FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "NO_MEAN", "NO_STD", "OPENAI_CLIP_MEAN",
           "OPENAI_CLIP_STD", "VARIANTS", "VariantSpec", "list_models"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NO_MEAN, NO_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # MCi0-2 take pixels in [0, 1] as is


def _mci(depths: tuple[int, ...], widths: tuple[int, ...], **kw: Any) -> VariantSpec:
    """An MCi row: what every MobileCLIP tower shares (timm's ``fastvit_mci*``)."""
    kw.setdefault("attention_stages", (3,))
    return VariantSpec(depths, widths, family="mobileclip", lkc_act=True, crop_pct=0.95, **kw)


VARIANTS: dict[str, VariantSpec] = {
    "fastvit_t8": VariantSpec((2, 2, 4, 2), (48, 96, 192, 384), 3, (),
                              published=dict(top1=76.2, top1_distilled=77.2, gmacs=0.69)),
    "fastvit_t12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 3, (),
                               published=dict(top1=79.3, top1_distilled=80.3, gmacs=1.39)),
    "fastvit_s12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 4, (),
                               published=dict(top1=79.9, top1_distilled=81.1, gmacs=1.79)),
    "fastvit_sa12": VariantSpec((2, 2, 6, 2), (64, 128, 256, 512), 4, (3,),
                                recipe_drop_path=0.1, recipe_distill_mixup=0.8,
                                published=dict(top1=80.9, top1_distilled=81.9, gmacs=1.94)),
    "fastvit_sa24": VariantSpec((4, 4, 12, 4), (64, 128, 256, 512), 4, (3,),
                                recipe_drop_path=0.1, recipe_distill_drop_path=0.05,
                                recipe_distill_mixup=0.8,
                                published=dict(top1=82.7, top1_distilled=83.4, gmacs=3.76)),
    "fastvit_sa36": VariantSpec((6, 6, 18, 6), (64, 128, 256, 512), 4, (3,),
                                layer_scale_init=1e-6, crop_pct=0.95, recipe_drop_path=0.2,
                                recipe_distill_drop_path=0.1, recipe_distill_mixup=0.8,
                                published=dict(top1=83.6, top1_distilled=84.2, gmacs=5.59)),
    "fastvit_ma36": VariantSpec((6, 6, 18, 6), (76, 152, 304, 608), 4, (3,),
                                layer_scale_init=1e-6, crop_pct=0.95, recipe_drop_path=0.35,
                                recipe_mixup=0.8, recipe_distill_drop_path=0.2,
                                recipe_distill_mixup=0.8,
                                published=dict(top1=83.9, top1_distilled=84.6, gmacs=7.82)),
    # MobileCLIP image towers: attention in stage 4 (and 5), SE in the stage 3-4 patch
    # embeddings (MCi0-2) or LayerNorm before attention and no stem scale branch (MCi3/4).
    "fastvit_mci0": _mci((2, 6, 10, 2), (64, 128, 256, 512), mlp_ratio=3,
                         se_downsample_stages=(2, 3), num_classes=512,
                         mean=NO_MEAN, std=NO_STD),
    "fastvit_mci1": _mci((4, 12, 20, 4), (64, 128, 256, 512), mlp_ratio=3,
                         se_downsample_stages=(2, 3), num_classes=512,
                         mean=NO_MEAN, std=NO_STD),
    "fastvit_mci2": _mci((4, 12, 24, 4), (80, 160, 320, 640), mlp_ratio=3,
                         se_downsample_stages=(2, 3), num_classes=512,
                         mean=NO_MEAN, std=NO_STD),
    "fastvit_mci3": _mci((2, 12, 24, 4, 2), (96, 192, 384, 768, 1536), mlp_ratio=4,
                         attention_stages=(3, 4), attention_norm="layernorm",
                         stem_scale_branch=False, num_classes=768,
                         mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD),
    "fastvit_mci4": _mci((2, 12, 24, 4, 4), (128, 256, 512, 1024, 2048), mlp_ratio=4,
                         attention_stages=(3, 4), attention_norm="layernorm",
                         stem_scale_branch=False, num_classes=768,
                         mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD),
}


def list_models(family: str = "paper") -> list[str]:
    """Variant names, smallest first.

    ``"paper"`` (the default): the paper's seven ImageNet classifiers, the variants
    with published ImageNet weights, accuracies and recipes; ``"mobileclip"``: the
    MCi0-4 image towers; ``"all"``: every name :func:`fastvit.create_model` builds.
    """
    if family == "all":
        return list(VARIANTS)
    if family not in FAMILIES:
        raise ValueError(f"unknown variant family {family!r}; choose one of "
                         f"{', '.join(FAMILIES)} or all")
    return [name for name, spec in VARIANTS.items() if spec.family == family]
