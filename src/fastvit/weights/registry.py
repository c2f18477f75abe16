"""The official ImageNet-1k weights of every variant, and where each can be fetched.

Apple's release (apple/ml-fastvit) publishes, per variant, a model trained on
ImageNet-1k and one trained with knowledge distillation, each as a train-time
(``unfused``) and a reparameterized (``_reparam``) ``.pth.tar``. timm mirrors the
train-time ones on the Hugging Face Hub as ``timm/fastvit_<v>.apple_in1k`` and
``.apple_dist_in1k`` (``model.safetensors`` in timm's key layout, which is ours).
Tags name them: ``in1k``, ``dist_in1k`` and the fused ``in1k_reparam``,
``dist_in1k_reparam``. The top-1 accuracies are the paper's (Table 3 / the
release's model zoo), from :data:`fastvit.models.VARIANTS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fastvit.errors import ConfigError
from fastvit.models import VARIANTS, list_models

OFFICIAL_URL_BASE = "https://docs-assets.developer.apple.com/ml-research/models/fastvit"
URL_BASE_ENV = "FASTVIT_WEIGHTS_URL"  # a mirror of the release's folder layout
HF_WEIGHTS_FILE = "model.safetensors"
DEFAULT_TAG = "in1k"
TAGS = ("in1k", "dist_in1k", "in1k_reparam", "dist_in1k_reparam")
TAG_ALIASES = {"apple_in1k": "in1k", "apple_dist_in1k": "dist_in1k",
               "in1k_fused": "in1k_reparam", "dist_in1k_fused": "dist_in1k_reparam"}
LICENSE = "apple-ml-fastvit (see https://github.com/apple/ml-fastvit/blob/main/LICENSE)"

# sha256 of released files, where known (key: the path below the URL base). Files
# without one are hashed on first download and checked against that record after.
KNOWN_SHA256: dict[str, str] = {}


@dataclass(frozen=True)
class OfficialWeights:
    """One published set of weights: a variant and a tag, and its sources."""

    variant: str
    tag: str

    @property
    def distilled(self) -> bool:
        return self.tag.startswith("dist_")

    @property
    def fused(self) -> bool:
        return self.tag.endswith("_reparam")

    @property
    def name(self) -> str:
        return f"{self.variant}.{self.tag}"

    @property
    def top1(self) -> float:
        published = VARIANTS[self.variant].published
        return published["top1_distilled" if self.distilled else "top1"]

    @property
    def hf_hub_id(self) -> str | None:
        """timm's Hub repository (train-time weights only: timm publishes no fused ones)."""
        if self.fused:
            return None
        return f"timm/{self.variant}.apple_{'dist_' if self.distilled else ''}in1k"

    @property
    def url_path(self) -> str:
        folder = ("image_classification_distilled_models" if self.distilled
                  else "image_classification_models")
        return f"{folder}/{self.variant}{'_reparam' if self.fused else ''}.pth.tar"

    def url(self, base: str | None = None) -> str:
        """The official URL (``base``, else ``$FASTVIT_WEIGHTS_URL``, replaces the host part)."""
        base = base or os.environ.get(URL_BASE_ENV) or OFFICIAL_URL_BASE
        return f"{base.rstrip('/')}/{self.url_path}"

    @property
    def sha256(self) -> str | None:
        return KNOWN_SHA256.get(self.url_path)

    @property
    def form(self) -> str:
        return "fused" if self.fused else "train-time"

    def pretrained_cfg(self) -> dict[str, Any]:
        """The keys these weights add to a model's timm-style ``pretrained_cfg``."""
        cfg: dict[str, Any] = {"tag": self.tag, "url": self.url(), "license": LICENSE,
                               "dataset": "imagenet-1k", "top1": self.top1}
        if self.hf_hub_id:
            cfg["hf_hub_id"] = self.hf_hub_id
        return cfg


def normalize_tag(tag: str | bool) -> str:
    """``True`` -> the default tag; timm's ``apple_in1k`` -> ``in1k``; unknown: ConfigError."""
    if tag is True:
        return DEFAULT_TAG
    name = TAG_ALIASES.get(str(tag), str(tag))
    if name not in TAGS:
        raise ConfigError(f"unknown weights tag {tag!r}; choose one of: {', '.join(TAGS)} "
                          f"(or a file, a URL or hf-hub:ORG/REPO)")
    return name


def is_tag(spec: object) -> bool:
    return spec is True or (isinstance(spec, str) and TAG_ALIASES.get(spec, spec) in TAGS)


def official_weights(variant: str | None, tag: str | bool = DEFAULT_TAG) -> OfficialWeights:
    """The registry entry of ``variant`` and ``tag`` (one clear error for either unknown)."""
    tag = normalize_tag(tag)
    if variant is None:
        raise ConfigError(f"the weights tag {tag!r} needs a variant: pass --model NAME "
                          f"(one of {', '.join(list_models())})")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown FastViT variant {variant!r}; choose one of: "
                          f"{', '.join(list_models())}")
    return OfficialWeights(variant, tag)


def list_weights(variants: list[str] | None = None,
                 tags: list[str] | None = None) -> list[OfficialWeights]:
    """Every published set of weights, smallest variant first (optionally filtered)."""
    names = variants or list_models()
    wanted = [normalize_tag(t) for t in tags] if tags else list(TAGS)
    return [official_weights(v, t) for v in names for t in wanted]
