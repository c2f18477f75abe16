"""State-dict layouts users hold, and how to tell them apart.

Our parameter names are timm's (``stem``, ``stages.S.{downsample,pos_emb,blocks}``,
``conv_kxk``...), so timm files need no renaming. The official releases
(apple/ml-fastvit, and the MCi towers of apple/ml-mobileclip and apple/ml-fastvlm)
keep the stages in one flat ``network.N`` list and use MobileOne/RepLKNet names
(``rbr_conv``, ``lkb_origin``...); this module maps those names onto ours and back,
one key at a time, and recognises which variant a state dict belongs to by
comparing its keys and shapes with every variant's (built on the ``meta`` device,
so no memory is spent).

Whole-model files hold an image tower among other weights; its keys are taken out
by prefix (:data:`IMAGE_TOWER_PREFIXES`): open_clip's ``visual.trunk.`` (MobileCLIP
and MobileCLIP2 models, timm names), ml-mobileclip's ``image_encoder.model.``
(official names, the CLIP projection as ``head.proj``), transformers' FastVLM
``model.vision_tower.timm_model.`` (timm names) and ml-fastvlm's
``model.vision_tower.vision_tower.model.`` (official names).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fastvit.errors import CheckpointError
from fastvit.models import VARIANTS, FastVit, list_models

StateDict = dict[str, torch.Tensor]

# Wrappers that prepend a name to every key: DDP, torch.compile, Lightning-style modules.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# Where whole CLIP / VLM models keep their FastViT image tower (after any wrapper prefix).
IMAGE_TOWER_PREFIXES = {
    "visual.trunk.": "open_clip",
    "image_encoder.model.": "ml-mobileclip",
    "model.vision_tower.timm_model.": "transformers FastVLM",
    "vision_tower.timm_model.": "transformers FastVLM",
    "model.vision_tower.vision_tower.model.": "ml-fastvlm",
    "vision_tower.vision_tower.model.": "ml-fastvlm",
}

# Key segments renamed between the official release and our (timm's) layout.
_OFFICIAL_TO_OURS_SEGMENTS = {
    "rbr_conv": "conv_kxk",
    "rbr_scale": "conv_scale",
    "rbr_skip": "identity",
    "lkb_origin": "large_conv",
    "lkb_reparam": "reparam_conv",
    "convffn": "mlp",
}
_OURS_TO_OFFICIAL_SEGMENTS = {v: k for k, v in _OFFICIAL_TO_OURS_SEGMENTS.items()
                              if k != "lkb_reparam"}
_LAYER_SCALES = ("layer_scale", "layer_scale_1", "layer_scale_2")

CLIP_PROJECTION = "head.proj"
_UNFUSED_SEGMENTS = {"conv_kxk", "conv_scale", "identity", "large_conv", "small_conv", "pos_enc"}
_OFFICIAL_ROOTS = ("network.", "patch_embed.", "conv_exp.")
_OUR_ROOTS = ("stem.", "stages.", "final_conv.")


@dataclass(frozen=True)
class Layout:
    """What :func:`detect_layout` found out about a state dict.

    ``name`` is ``"ours"`` (also timm's layout) or ``"official"``; ``fused`` is
    None when the file mixes fused and train-time blocks; ``variant`` is the
    closest variant, ``variant_score`` the fraction of keys (and shapes) it shares
    with it (1.0: an exact match, classifier size and input channels aside).
    """

    name: str
    fused: bool | None
    variant: str | None
    variant_score: float
    num_classes: int | None
    in_chans: int | None

    @property
    def exact(self) -> bool:
        return self.variant is not None and self.variant_score == 1.0

    def describe(self) -> str:
        return describe_layout(self.name, self.fused)


def describe_layout(name: str, fused: bool | None) -> str:
    """``"official (apple/ml-fastvit) layout, fused"`` and the like, for messages."""
    form = {True: "fused", False: "train-time (unfused)", None: "partly fused"}[fused]
    layout = "official (apple/ml-fastvit)" if name == "official" else "fastvit/timm"
    return f"{layout} layout, {form}"


# ---------------------------------------------------------------------------
# Wrappers and prefixes
# ---------------------------------------------------------------------------


def strip_shared_prefixes(sd: StateDict) -> StateDict:
    """Remove the wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) that every key
    shares, in any nesting; nothing else (a whole CLIP model keeps its towers)."""
    changed = True
    while sd and changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def image_tower_prefix(state_dict: Mapping[str, object]) -> str | None:
    """The prefix under which a whole CLIP / VLM file keeps its image tower, if any."""
    for prefix in IMAGE_TOWER_PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            return prefix
    return None


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Remove ``module.`` / ``_orig_mod.`` / ``model.`` prefixes shared by every key
    (in any nesting, e.g. DDP around torch.compile) and swa_utils' ``n_averaged``; of
    a whole CLIP / VLM model, keep only the image tower (text tower, ``logit_scale``,
    language model and projector dropped)."""
    sd = strip_shared_prefixes({k: v for k, v in state_dict.items() if k != "n_averaged"})
    prefix = image_tower_prefix(sd)
    if prefix is not None:
        sd = strip_shared_prefixes({k[len(prefix):]: v for k, v in sd.items()
                                    if k.startswith(prefix)})
    return sd


def layout_name(state_dict: Mapping[str, object]) -> str:
    """``"official"`` or ``"ours"``; CheckpointError when it is neither."""
    keys = list(state_dict)
    if any(k.startswith(_OFFICIAL_ROOTS) for k in keys):
        return "official"
    if any(k.startswith(_OUR_ROOTS) for k in keys):
        return "ours"
    sample = ", ".join(keys[:5]) or "(no tensors)"
    raise CheckpointError(f"not a FastViT state dict: none of its keys belong to a known layout "
                          f"(fastvit/timm 'stem.', 'stages.'; official 'patch_embed.', "
                          f"'network.'); first keys: {sample}")


# ---------------------------------------------------------------------------
# Official <-> ours
# ---------------------------------------------------------------------------


def _network_roles(keys: list[str]) -> dict[int, str]:
    """Map each official ``network.K`` index to ``stages.S.<part>`` by walking the list:
    a stage is [PatchEmbed] [RepCPE] blocks, in that order, as in the release."""
    parts: dict[int, str] = {}
    for key in keys:
        m = re.match(r"network\.(\d+)\.([^.]+)", key)
        if not m:
            continue
        index, child = int(m.group(1)), m.group(2)
        if child == "proj":
            part = "downsample"
        elif child in ("pe", "reparam_conv"):
            part = "pos_emb"
        elif child.isdigit():
            part = "blocks"
        else:
            raise CheckpointError(f"unexpected official key {key!r}: network entries hold "
                                  f"blocks, 'proj' (patch embedding) or 'pe' (RepCPE)")
        if parts.setdefault(index, part) != part:
            raise CheckpointError(f"official entry network.{index} mixes {parts[index]} "
                                  f"and {part} keys")
    roles, stage, stage_has_blocks = {}, 0, False
    order = {"downsample": 0, "pos_emb": 1, "blocks": 2}
    last = -1
    for index in sorted(parts):
        part = parts[index]
        if stage_has_blocks or order[part] <= last:
            stage, stage_has_blocks, last = stage + 1, False, -1
        last = order[part]
        stage_has_blocks = part == "blocks"
        roles[index] = f"stages.{stage}.{part}"
    return roles


def _official_key_to_ours(key: str, roles: dict[int, str]) -> str:
    """One official key in our names (``head.proj``, a value change too, is the caller's)."""
    segments = key.split(".")
    root = segments[0]
    if root == "patch_embed":
        segments[0] = "stem"
    elif root == "conv_exp":
        segments[0] = "final_conv"
    elif root == "head" and len(segments) == 2:
        segments = ["head", "fc", segments[1]]
    elif root == "network":
        role = roles[int(segments[1])]
        rest = segments[2:]
        if role.endswith("pos_emb") and rest[0] == "pe":
            rest = ["pos_enc"] + rest[1:]
        segments = role.split(".") + rest
    out = []
    for i, seg in enumerate(segments):
        if i > 0 and segments[i - 1] == "se" and seg in ("reduce", "expand"):
            seg = "fc1" if seg == "reduce" else "fc2"
        out.append(_OFFICIAL_TO_OURS_SEGMENTS.get(seg, seg))
    if out[-1] in _LAYER_SCALES:  # a bare parameter there, a LayerScale2d here
        out.append("gamma")
    return ".".join(out)


def official_to_ours(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename an official-release state dict (unwrapped, no prefix) to our layout.

    ml-mobileclip's CLIP projection ``head.proj`` (in x out, applied as ``x @ proj``)
    becomes the linear classifier ``head.fc`` (its transpose, zero bias), as timm does.
    """
    roles = _network_roles(list(state_dict))
    out = {}
    for key, value in state_dict.items():
        if key == CLIP_PROJECTION:
            out["head.fc.weight"] = value.t().contiguous()
            out["head.fc.bias"] = value.new_zeros(value.shape[1])
        else:
            out[_official_key_to_ours(key, roles)] = value
    return out


def to_official_layout(state_dict: Mapping[str, torch.Tensor], clip_projection: bool = False
                       ) -> StateDict:
    """Our layout -> the official release's (for tools that expect it). Fused
    large-kernel convs become ``lkb_reparam``, as the release names them;
    ``clip_projection`` writes the classifier as ml-mobileclip's bias-free ``head.proj``."""
    sd = strip_wrapper_prefixes(state_dict)
    if clip_projection and "head.fc.weight" in sd:
        bias = sd.pop("head.fc.bias", None)
        if bias is not None and not bias.is_meta and bool(bias.any()):
            raise CheckpointError("head.proj has no bias, but this classifier's is not zero")
        sd[CLIP_PROJECTION] = sd.pop("head.fc.weight").t().contiguous()
    index_of: dict[str, int] = {}
    n = 0
    for stage in range(5):
        for part in ("downsample", "pos_emb", "blocks"):
            if any(k.startswith(f"stages.{stage}.{part}.") for k in sd):
                index_of[f"stages.{stage}.{part}"], n = n, n + 1
    out = {}
    for key, value in sd.items():
        seg = key.split(".")
        if seg[-1] == "gamma" and seg[-2] in _LAYER_SCALES:
            seg = seg[:-1]
        if seg[0] == "stem":
            seg[0] = "patch_embed"
        elif seg[0] == "final_conv":
            seg[0] = "conv_exp"
        elif key == CLIP_PROJECTION:
            pass
        elif seg[:2] == ["head", "fc"]:
            seg = ["head"] + seg[2:]
        elif seg[0] == "stages":
            index = index_of[".".join(seg[:3])]
            rest = seg[3:]
            if seg[2] == "pos_emb":
                rest = ["pe"] + rest[1:] if rest[0] == "pos_enc" else rest
            elif seg[2] == "downsample" and rest[:3] == ["proj", "0", "reparam_conv"]:
                rest = rest[:2] + ["lkb_reparam"] + rest[3:]
            seg = ["network", str(index)] + rest
        renamed = []
        for i, s in enumerate(seg):
            if i > 0 and seg[i - 1] == "se" and s in ("fc1", "fc2"):
                s = "reduce" if s == "fc1" else "expand"
            renamed.append(_OURS_TO_OFFICIAL_SEGMENTS.get(s, s))
        out[".".join(renamed)] = value
    return out


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Any supported state dict (wrapper prefixes allowed) -> our layout."""
    sd = strip_wrapper_prefixes(state_dict)
    if layout_name(sd) == "official":
        sd = official_to_ours(sd)
    return sd


# ---------------------------------------------------------------------------
# Fused or not, and which variant
# ---------------------------------------------------------------------------


def fused_state(state_dict: Mapping[str, object]) -> bool | None:
    """True: only fused blocks; False: only train-time blocks; None: both (our layout)."""
    segments = {s for k in state_dict for s in k.split(".")}
    fused = "reparam_conv" in segments
    unfused = bool(segments & _UNFUSED_SEGMENTS)
    if fused and unfused:
        return None
    return fused


_STEM_INPUT_KEYS = ("stem.0.conv_kxk.0.conv.weight", "stem.0.conv_scale.conv.weight",
                    "stem.0.reparam_conv.weight")


def _comparable(state_dict: Mapping[str, object], keep_final_conv: bool
                ) -> dict[str, tuple[int, ...]]:
    """Keys and shapes that define a variant: no classifier, no BN counters, and the
    stem's input-channel dimension left out."""
    sig = {}
    for key, value in state_dict.items():
        if key.startswith("head.") or key.endswith("num_batches_tracked"):
            continue
        if not keep_final_conv and key.startswith("final_conv."):
            continue
        shape = tuple(value.shape) if hasattr(value, "shape") else tuple(value)
        if key in _STEM_INPUT_KEYS:
            shape = shape[:1] + shape[2:]
        sig[key] = shape
    return sig


@functools.cache
def variant_signature(name: str, fused: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a variant's state dict (1000 classes), built on the meta device."""
    with torch.device("meta"):
        model = FastVit(VARIANTS[name], inference_mode=fused, variant=name)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def guess_variant(state_dict: Mapping[str, object], fused: bool | None = None,
                  candidates: Sequence[str] | None = None) -> list[tuple[float, str, bool]]:
    """Every (score, variant, fused) candidate (``candidates``: those variants only), best
    first. The score is the share of keys with equal shape over the union of both key sets
    (1.0: same architecture)."""
    keep_final = any(k.startswith("final_conv.") for k in state_dict)
    ckpt = _comparable(state_dict, keep_final)
    forms = (False, True) if fused is None else (fused,)
    results = []
    for name in candidates or list_models("all"):
        for form in forms:
            ref = _comparable(variant_signature(name, form), keep_final)
            same = sum(1 for k, shape in ckpt.items() if ref.get(k) == shape)
            union = len(ckpt.keys() | ref.keys())
            results.append((same / union if union else 0.0, name, form))
    results.sort(key=lambda r: -r[0])
    return results


def num_classes_of(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Classifier size of an our-layout state dict (None: no classifier stored)."""
    weight = state_dict.get("head.fc.weight")
    return int(weight.shape[0]) if weight is not None else None


def in_chans_of(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    for key in _STEM_INPUT_KEYS:
        if key in state_dict:
            return int(state_dict[key].shape[1])
    return None


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    """Which layout, fused or not, and which variant a state dict most likely is."""
    raw = strip_wrapper_prefixes(state_dict)
    name = layout_name(raw)
    sd = official_to_ours(raw) if name == "official" else raw
    fused = fused_state(sd)
    score, variant, _ = guess_variant(sd, fused)[0]
    return Layout(name=name, fused=fused, variant=variant if score > 0 else None,
                  variant_score=score, num_classes=num_classes_of(sd), in_chans=in_chans_of(sd))
