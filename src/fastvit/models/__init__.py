"""The model core: building blocks, the network and its variants, reparameterization,
numerical checks and compute counts. Imports nothing above it and never opens files."""

from fastvit.models.counting import count_gmacs, count_params
from fastvit.models.network import FastVit, FeatureInfo, base_cfg
from fastvit.models.reparam import deploy_form, fold_batchnorms, is_fused, reparameterize
from fastvit.models.variants import (
    FAMILIES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VARIANTS,
    VariantSpec,
    list_models,
)
from fastvit.models.verify import max_abs_difference, randomize_model_stats

__all__ = [
    "FAMILIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "VARIANTS",
    "FastVit",
    "FeatureInfo",
    "VariantSpec",
    "base_cfg",
    "count_gmacs",
    "count_params",
    "deploy_form",
    "fold_batchnorms",
    "is_fused",
    "list_models",
    "max_abs_difference",
    "randomize_model_stats",
    "reparameterize",
]
