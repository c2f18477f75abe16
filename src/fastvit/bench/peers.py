"""The models FastViT is benchmarked against, and published ImageNet top-1 of everything.

Peers are built with random weights (latency does not depend on them, and
nothing is downloaded): torchvision classifiers always, timm's MobileOne and
FastViT only when timm is installed (a benchmark extra, never required).
Reparameterizable timm models are fused like ours, so the comparison is
deployed form against deployed form.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from torch import nn

from fastvit.extras import install_hint
from fastvit.models import VARIANTS, list_models

TORCHVISION_PEERS = ("efficientnet_b0", "mobilenet_v3_large", "convnext_tiny", "resnet50",
                     "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf",
                     "regnet_y_8gf")
TORCHVISION_OPTIONAL = ("regnet_y_16gf", "regnet_y_32gf")  # by name only: large for a CPU
TIMM_PEERS = tuple(f"timm:mobileone_s{i}" for i in range(5)) + tuple(
    f"timm:{name}" for name in list_models())  # the paper's classifiers, as timm builds them
#: the MobileCLIP image towers as timm builds them (``fastvit bench mobileclip``; not in the
#: default peer set: MCi3/4 are large for a CPU run of every peer)
TIMM_MOBILECLIP_PEERS = tuple(f"timm:{name}" for name in list_models("mobileclip"))
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class Published:
    top1: float
    eval_size: int
    source: str


@lru_cache(maxsize=1)
def published_table() -> dict[str, Published]:
    """``model -> Published`` for the paper's variants (their ``VARIANTS`` rows) and the peers
    (``fastvit/assets/published_top1.csv``). The MobileCLIP towers have none: their output
    is a CLIP embedding, and their papers' zero-shot ImageNet numbers belong to a whole
    CLIP model and its weights (two tags per tower), not to the tower."""
    table = {name: Published(spec.published["top1"], 256, "FastViT paper (ICCV 2023), "
                             "non-distilled, ImageNet-1k table")
             for name, spec in VARIANTS.items() if spec.published}
    text = resources.files("fastvit").joinpath("assets/published_top1.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    for row in rows:
        table[row["model"]] = Published(float(row["top1"]), int(row["eval_size"]), row["source"])
    return table


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def is_peer(name: str) -> bool:
    return name in TORCHVISION_PEERS + TORCHVISION_OPTIONAL or name.startswith(TIMM_PREFIX)


def peer_names(include_timm: bool | None = None) -> list[str]:
    """Default peer set: the torchvision models, plus timm's when timm is installed."""
    include_timm = timm_available() if include_timm is None else include_timm
    return list(TORCHVISION_PEERS) + (list(TIMM_PEERS) if include_timm else [])


def timm_twin(name: str) -> str | None:
    """``timm:fastvit_t8`` -> ``fastvit_t8``: the variant a timm peer is timm's build of."""
    arch = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else None
    return arch if arch in VARIANTS else None


class PeerUnavailable(RuntimeError):
    """A peer cannot be built here (timm missing, or no features-only form)."""


def build_peer(name: str, *, fused: bool = True, features_only: bool = False) -> nn.Module:
    """A peer in eval mode with random weights (reparameterized when ``fused``)."""
    if name.startswith(TIMM_PREFIX):
        if not timm_available():
            raise PeerUnavailable(f"{name} needs timm ({install_hint('timm')}); skipped")
        import timm
        from timm.utils.model import reparameterize_model

        arch = name[len(TIMM_PREFIX):]
        kwargs = {"features_only": True} if features_only else {}
        model = timm.create_model(arch, pretrained=False, **kwargs).eval()
        return reparameterize_model(model) if fused else model
    if name not in TORCHVISION_PEERS + TORCHVISION_OPTIONAL:
        raise ValueError(f"unknown peer {name!r}; choose from "
                         f"{', '.join(TORCHVISION_PEERS + TORCHVISION_OPTIONAL + TIMM_PEERS)}"
                         f", {', '.join(TIMM_MOBILECLIP_PEERS)}")
    if features_only:
        raise PeerUnavailable(f"{name}: features-only form is benchmarked for FastViT and timm "
                              f"models only; skipped")
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval()
