"""The official ImageNet-1k weights of every variant, and where each can be fetched.

Apple's release (apple/ml-fastvit) publishes, per variant, a model trained on
ImageNet-1k and one trained with knowledge distillation, each as a train-time
(``unfused``) and a reparameterized (``_reparam``) ``.pth.tar``. timm mirrors the
train-time ones on the Hugging Face Hub as ``timm/fastvit_<v>.apple_in1k`` and
``.apple_dist_in1k`` (``model.safetensors`` in timm's key layout, which is ours).
Tags name them: ``in1k``, ``dist_in1k`` and the fused ``in1k_reparam``,
``dist_in1k_reparam``. The top-1 accuracies are the paper's (Table 3 / the
release's model zoo), from :data:`fastvit.models.VARIANTS`.

The MCi image towers have CLIP weights instead (timm's pretrained tags): ``apple_mclip``
(MobileCLIP, MCi0-2; the Hub repositories ``apple/mobileclip_s{0,1,2}_timm`` and
ml-mobileclip's release files) and ``apple_mclip2_dfndr2b`` (MobileCLIP2, MCi0, 2, 3,
4; ``timm/fastvit_mciN.apple_mclip2_dfndr2b``). Their classifier is the CLIP image
projection; they have no ImageNet top-1.
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
CLIP_LICENSE = "apple-amlr (see https://github.com/apple/ml-mobileclip)"
MOBILECLIP_URL_BASE = "https://docs-assets.developer.apple.com/ml-research/datasets/mobileclip"
CLIP_TAGS = ("apple_mclip", "apple_mclip2_dfndr2b")
CLIP_TAG_ALIASES = {"mclip": "apple_mclip", "mclip2_dfndr2b": "apple_mclip2_dfndr2b"}


@dataclass(frozen=True)
class ClipRelease:
    """Where one MCi tower's CLIP weights live, and how its images were prepared."""

    hf_hub_id: str
    crop_pct: float
    dataset: str
    url_path: str | None = None  # below MOBILECLIP_URL_BASE: the whole ml-mobileclip model


# timm's pretrained cfgs of fastvit_mci0..4 (hub ids, crop ratios); first tag: the default
CLIP_WEIGHTS: dict[tuple[str, str], ClipRelease] = {
    ("fastvit_mci0", "apple_mclip"): ClipRelease(
        "apple/mobileclip_s0_timm", 0.95, "DataCompDR-1B", "mobileclip_s0.pt"),
    ("fastvit_mci1", "apple_mclip"): ClipRelease(
        "apple/mobileclip_s1_timm", 0.95, "DataCompDR-1B", "mobileclip_s1.pt"),
    ("fastvit_mci2", "apple_mclip"): ClipRelease(
        "apple/mobileclip_s2_timm", 0.95, "DataCompDR-1B", "mobileclip_s2.pt"),
    ("fastvit_mci0", "apple_mclip2_dfndr2b"): ClipRelease(
        "timm/fastvit_mci0.apple_mclip2_dfndr2b", 1.0, "DFNDR-2B"),
    ("fastvit_mci2", "apple_mclip2_dfndr2b"): ClipRelease(
        "timm/fastvit_mci2.apple_mclip2_dfndr2b", 0.95, "DFNDR-2B"),
    ("fastvit_mci3", "apple_mclip2_dfndr2b"): ClipRelease(
        "timm/fastvit_mci3.apple_mclip2_dfndr2b", 0.95, "DFNDR-2B"),
    ("fastvit_mci4", "apple_mclip2_dfndr2b"): ClipRelease(
        "timm/fastvit_mci4.apple_mclip2_dfndr2b", 0.95, "DFNDR-2B"),
}

# sha256 of released files, where known (key: the path below the URL base). Files
# without one are hashed on first download and checked against that record after.
KNOWN_SHA256: dict[str, str] = {}


@dataclass(frozen=True)
class OfficialWeights:
    """One published set of weights: a variant and a tag, and its sources."""

    variant: str
    tag: str

    @property
    def clip(self) -> ClipRelease | None:
        """The MCi tower's CLIP release (None: the paper's ImageNet weights)."""
        return CLIP_WEIGHTS.get((self.variant, self.tag))

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
    def top1(self) -> float | None:
        """The paper's ImageNet top-1 (None for CLIP weights)."""
        if self.clip:
            return None
        published = VARIANTS[self.variant].published
        return published["top1_distilled" if self.distilled else "top1"]

    @property
    def hf_hub_id(self) -> str | None:
        """timm's Hub repository (train-time weights only: timm publishes no fused ones)."""
        if self.clip:
            return self.clip.hf_hub_id
        if self.fused:
            return None
        return f"timm/{self.variant}.apple_{'dist_' if self.distilled else ''}in1k"

    @property
    def url_path(self) -> str:
        if self.clip:  # the URL cache keeps them apart from the ImageNet release's folders
            return f"mobileclip/{self.clip.url_path or self.name + '.safetensors'}"
        folder = ("image_classification_distilled_models" if self.distilled
                  else "image_classification_models")
        return f"{folder}/{self.variant}{'_reparam' if self.fused else ''}.pth.tar"

    def url(self, base: str | None = None) -> str | None:
        """The official URL (``base``, else ``$FASTVIT_WEIGHTS_URL``, replaces the host part);
        MCi towers: ml-mobileclip's file (a whole CLIP model), None when only the Hub has them."""
        if self.clip:
            return f"{MOBILECLIP_URL_BASE}/{self.clip.url_path}" if self.clip.url_path else None
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
        if self.clip:
            cfg: dict[str, Any] = {"tag": self.tag, "license": CLIP_LICENSE,
                                   "dataset": self.clip.dataset, "crop_pct": self.clip.crop_pct}
            if self.url():
                cfg["url"] = self.url()
        else:
            cfg = {"tag": self.tag, "url": self.url(), "license": LICENSE,
                   "dataset": "imagenet-1k", "top1": self.top1}
        if self.hf_hub_id:
            cfg["hf_hub_id"] = self.hf_hub_id
        return cfg


def _canonical(tag: str) -> str:
    return TAG_ALIASES.get(tag) or CLIP_TAG_ALIASES.get(tag) or tag


def default_tag(variant: str | None) -> str:
    """``in1k`` for the paper's variants; an MCi tower's first CLIP tag (timm's default)."""
    clip = [tag for (v, tag) in CLIP_WEIGHTS if v == variant]
    return clip[0] if clip else DEFAULT_TAG


def normalize_tag(tag: str | bool, variant: str | None = None) -> str:
    """``True`` -> the variant's default tag; timm's ``apple_in1k`` -> ``in1k``; unknown:
    ConfigError."""
    if tag is True:
        return default_tag(variant)
    name = _canonical(str(tag))
    if name not in TAGS + CLIP_TAGS:
        raise ConfigError(f"unknown weights tag {tag!r}; choose one of: {', '.join(TAGS)} "
                          f"(MCi towers: {', '.join(CLIP_TAGS)}; or a file, a URL or "
                          f"hf-hub:ORG/REPO)")
    return name


def is_tag(spec: object) -> bool:
    return spec is True or (isinstance(spec, str) and _canonical(spec) in TAGS + CLIP_TAGS)


def tags_of(variant: str) -> list[str]:
    """The tags published for ``variant``."""
    if VARIANTS[variant].family == "paper":
        return list(TAGS)
    return [tag for (v, tag) in CLIP_WEIGHTS if v == variant]


def official_weights(variant: str | None, tag: str | bool = DEFAULT_TAG) -> OfficialWeights:
    """The registry entry of ``variant`` and ``tag`` (one clear error for either unknown,
    or for a tag the variant was not published with)."""
    tag = normalize_tag(tag, variant)
    if variant is None:
        raise ConfigError(f"the weights tag {tag!r} needs a variant: pass --model NAME "
                          f"(one of {', '.join(list_models('all'))})")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown FastViT variant {variant!r}; choose one of: "
                          f"{', '.join(list_models('all'))}")
    if tag not in tags_of(variant):
        raise ConfigError(f"{variant} has no {tag!r} weights; its tags: "
                          f"{', '.join(tags_of(variant)) or 'none'}")
    return OfficialWeights(variant, tag)


def list_weights(variants: list[str] | None = None, tags: list[str] | None = None,
                 family: str = "paper") -> list[OfficialWeights]:
    """Every published set of weights, smallest variant first (optionally filtered).
    ``variants`` default to :func:`fastvit.list_models` of ``family`` (``"paper"``: the
    ImageNet weights; ``"mobileclip"``; ``"all"``); each gets the tags it has."""
    names = variants or list_models(family)
    for name in names:
        if name not in VARIANTS:
            official_weights(name)  # the unknown-variant error
    wanted = [normalize_tag(t) for t in tags] if tags else None
    return [OfficialWeights(v, t) for v in names for t in tags_of(v)
            if wanted is None or t in wanted]
