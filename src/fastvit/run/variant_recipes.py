"""The paper's ImageNet-1k recipe of every variant, derived from the variant table.

The variants share one recipe (``configs/imagenet.yaml``, and ``configs/distill.yaml``
on top of it for knowledge distillation); what differs between them is a few values
of their row in :data:`fastvit.models.VARIANTS` (drop path, mixup, the eval crop
ratio). So ``fastvit_<v>`` and ``fastvit_<v>_distill`` are not files: each is its
base recipe with the row's values, and a new row brings both recipes.
"""

from __future__ import annotations

from typing import Any

from fastvit.models import VARIANTS, list_models

IMAGENET_RECIPE = "imagenet"
DISTILL_RECIPE = "distill"
DISTILL_SUFFIX = "_distill"


def variant_recipe_names() -> list[str]:
    """``fastvit_<v>`` and ``fastvit_<v>_distill`` for every paper row of the table (the
    MCi towers were trained by CLIP distillation, which these recipes do not cover)."""
    return [name for variant in list_models() for name in (variant, variant + DISTILL_SUFFIX)]


def variant_recipe(name: str) -> dict[str, Any] | None:
    """The recipe ``name`` as a ``base`` and the row's values; None: no row gives it."""
    distilled = name.endswith(DISTILL_SUFFIX)
    variant = name.removesuffix(DISTILL_SUFFIX)
    spec = VARIANTS.get(variant)
    if spec is None or spec.family != "paper":
        return None
    return {
        "base": DISTILL_RECIPE if distilled else IMAGENET_RECIPE,
        "model": {"variant": variant,
                  "drop_path": spec.recipe_distill_drop_path if distilled
                  else spec.recipe_drop_path},
        "data": {"crop_pct": spec.crop_pct,
                 "mixup": spec.recipe_distill_mixup if distilled else spec.recipe_mixup},
        "run": {"out_dir": f"runs/{name}"},
    }
