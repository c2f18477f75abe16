"""The CLIP models whose image tower is one of ours, named as open_clip names them.

MobileCLIP (Vasu et al., CVPR 2024) and MobileCLIP2 (Faghri et al., TMLR 2025;
apple/ml-mobileclip) pair an MCi image tower with a text transformer. open_clip 3.3
builds them as ``CustomTextCLIP``: the image tower is timm's ``fastvit_mciN`` (the
state dict's ``visual.trunk.`` keys, its classifier ``head.fc`` being the CLIP
projection), the text tower is ``text.*``, plus ``logit_scale``. Each row below names
the tower (open_clip's ``model_configs/<name>.json``, ``vision_cfg.timm_model_name``)
and open_clip's published weights: its pretrained tag and the Hub repository holding
the whole model. This table needs no open_clip, so image-only work (``fastvit embed``)
runs on the core install.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastvit.errors import ConfigError

#: open_clip's file names inside a Hub repository, preferred first
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ClipSpec:
    """One open_clip model: its image tower (our variant) and published weights."""

    tower: str
    releases: dict[str, str] = field(default_factory=dict)  # open_clip tag -> Hub repository


CLIP_MODELS: dict[str, ClipSpec] = {
    "MobileCLIP-S1": ClipSpec("fastvit_mci1", {"datacompdr": "apple/MobileCLIP-S1-OpenCLIP"}),
    "MobileCLIP-S2": ClipSpec("fastvit_mci2", {"datacompdr": "apple/MobileCLIP-S2-OpenCLIP"}),
    "MobileCLIP2-S0": ClipSpec("fastvit_mci0", {"dfndr2b": "timm/MobileCLIP2-S0-OpenCLIP"}),
    "MobileCLIP2-S2": ClipSpec("fastvit_mci2", {"dfndr2b": "timm/MobileCLIP2-S2-OpenCLIP"}),
    "MobileCLIP2-S3": ClipSpec("fastvit_mci3", {"dfndr2b": "timm/MobileCLIP2-S3-OpenCLIP"}),
    "MobileCLIP2-S4": ClipSpec("fastvit_mci4", {"dfndr2b": "timm/MobileCLIP2-S4-OpenCLIP"}),
}

#: open_clip's tag -> our registry's tag for the same image-tower weights (their
#: preprocessing: crop ratio, dataset, license; :mod:`fastvit.weights.registry`)
REGISTRY_TAGS = {"datacompdr": "apple_mclip", "dfndr2b": "apple_mclip2_dfndr2b"}
OPEN_CLIP_TAGS = {ours: theirs for theirs, ours in REGISTRY_TAGS.items()}


def list_clip_models() -> list[str]:
    """The open_clip model names :func:`fastvit.clip.load_clip` builds."""
    return list(CLIP_MODELS)


def clip_spec(name: str) -> ClipSpec:
    """The row of ``name``; an unknown name is one ConfigError listing the known ones."""
    spec = CLIP_MODELS.get(name)
    if spec is None:
        raise ConfigError(f"unknown CLIP model {name!r}; choose one of: "
                          f"{', '.join(CLIP_MODELS)} (open_clip's names of the MobileCLIP "
                          f"models with a FastViT image tower)")
    return spec


def models_with_tower(tower: str) -> list[str]:
    """The CLIP models whose image tower is ``tower`` (for error messages)."""
    return [name for name, spec in CLIP_MODELS.items() if spec.tower == tower]
