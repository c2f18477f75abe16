"""What every deployment path shares: the fused model, its preprocessing facts,
and two exact graph simplifications (BatchNorm folding, baked normalization).

``export``, ``predict`` and ``bench`` all start from :func:`load_deploy_model`,
so a checkpoint of any layout gives the same fused network everywhere.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastvit.errors import CheckpointError
from fastvit.labels import default_class_names
from fastvit.layers import AttentionBlock, ConvBN
from fastvit.model import VARIANTS, FastVit, create_model, list_models
from fastvit.reparam import reparameterize


@dataclass
class DeployModel:
    """A fused, eval-mode FastViT with what is needed to feed it and read its output."""

    model: FastVit
    name: str
    class_names: list[str] | None
    source: str  # the checkpoint path, or "random weights"
    default_cfg: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.default_cfg["input_size"][-1])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.default_cfg["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.default_cfg["std"])

    def label(self, index: int) -> str:
        if self.class_names is not None and index < len(self.class_names):
            return self.class_names[index]
        return f"class_{index}"


def _checkpoint_facts(name: str, path: str | Path) -> tuple[int | None, list[str] | None]:
    """Classifier size and class names stored in a checkpoint; refuse another variant."""
    from fastvit.checkpoint import class_names_from_metadata, read_checkpoint
    from fastvit.checkpoint_layouts import num_classes_of

    state_dict, metadata = read_checkpoint(path)
    said = metadata.get("variant")
    if said and said in list_models() and said != name:
        raise CheckpointError(f"checkpoint {path} holds {said} weights, not {name}: "
                              f"use --model {said}")
    return num_classes_of(state_dict), class_names_from_metadata(metadata)


def load_deploy_model(name: str, checkpoint: str | Path | None = None, *,
                      features_only: bool = False, fold_batchnorm: bool = True,
                      quiet: bool = False) -> DeployModel:
    """Build variant ``name``, load ``checkpoint`` (any layout, fused or not), fuse it.

    Without a checkpoint the weights are random (useful for latency work) and a
    warning is printed. ``fold_batchnorm`` also folds the BatchNorms left after
    reparameterization (see :func:`fold_batchnorms`).
    """
    if name not in VARIANTS:
        raise CheckpointError(f"unknown FastViT variant {name!r}; choose one of: "
                              f"{', '.join(list_models())}")
    num_classes, class_names = 1000, None
    if checkpoint is not None:
        file_classes, class_names = _checkpoint_facts(name, checkpoint)
        num_classes = file_classes if file_classes is not None else 1000
        source = str(checkpoint)
    else:
        source = "random weights"
        if not quiet:
            print(f"warning: no --checkpoint given: {name} has random weights (fine for latency, "
                  f"meaningless predictions)", file=sys.stderr)
    with warnings.catch_warnings():  # a fused file fusing the model is what we want here
        warnings.simplefilter("ignore", UserWarning)
        model = create_model(name, num_classes=num_classes, checkpoint=checkpoint,
                             features_only=features_only)
    model = reparameterize(model, inplace=True)
    if fold_batchnorm:
        fold_batchnorms(model)
    if class_names is None and not features_only:
        class_names = default_class_names(num_classes)
    return DeployModel(model, name, class_names, source, dict(model.default_cfg))


# ---------------------------------------------------------------------------
# BatchNorm folding left after reparameterization
# ---------------------------------------------------------------------------


def _conv_from(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode)
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)
    return fused.to(weight.device)


@torch.no_grad()
def fold_batchnorms(model: nn.Module) -> nn.Module:
    """Fold the eval BatchNorms a fused FastViT still has, in place; returns ``model``.

    Reparameterization keeps ConvFFN's conv+BN and the attention block's
    pre-norm. Both are affine maps next to a linear layer: the first folds into
    its conv, the second into the bias-free qkv projection that consumes it
    (``W (s*x + t) = (W diag(s)) x + W t``). Exact up to float rounding.
    ONNX Runtime folds the first itself; eager PyTorch, TorchScript and Core ML
    gain from both.
    """
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, ConvBN):
                weight, bias = child.fused()  # ConvBN's conv is bias-free
                setattr(parent, child_name, _conv_from(child.conv, weight, bias))
        if isinstance(parent, AttentionBlock) and isinstance(parent.norm, nn.BatchNorm2d):
            bn, qkv = parent.norm, parent.token_mixer.qkv
            scale = bn.weight / (bn.running_var + bn.eps).sqrt()
            shift = bn.bias - bn.running_mean * scale
            linear = nn.Linear(qkv.in_features, qkv.out_features, bias=True).to(qkv.weight)
            linear.weight.copy_(qkv.weight * scale)
            base = qkv.bias if qkv.bias is not None else torch.zeros_like(linear.bias)
            linear.bias.copy_(base + qkv.weight @ shift)
            parent.token_mixer.qkv = linear
            parent.norm = nn.Identity()
    return model


# ---------------------------------------------------------------------------
# Normalization baked into the first convolution
# ---------------------------------------------------------------------------


class RawPixelConv(nn.Module):
    """A first convolution that takes raw ``0..pixel_scale`` pixels.

    ``1 / (pixel_scale * std)`` is folded into the weights per input channel.
    The mean is NOT folded into the bias: the conv zero-pads its input, and a
    zero-padded normalized image is a *mean*-padded raw image, so a bias fold
    would be wrong on the border. Subtracting the mean pixel first (one
    per-channel subtraction at input resolution; Core ML's image input does it
    for free through its ``bias``) keeps the padding exact.
    """

    def __init__(self, conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float],
                 pixel_scale: float = 255.0, subtract_mean: bool = True) -> None:
        super().__init__()
        weight, bias = conv.weight.detach(), conv.bias
        std_t = torch.as_tensor(std, dtype=weight.dtype, device=weight.device)
        mean_t = torch.as_tensor(mean, dtype=weight.dtype, device=weight.device)
        self.conv = copy.deepcopy(conv)
        with torch.no_grad():
            self.conv.weight.copy_(weight / (pixel_scale * std_t).view(1, -1, 1, 1))
            if bias is None:
                self.conv.bias = None
        self.subtract_mean = subtract_mean
        self.register_buffer("pixel_mean", (pixel_scale * mean_t).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subtract_mean:
            x = x - self.pixel_mean
        return self.conv(x)


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """The first registered convolution (pre-order) and the module that holds it."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, child_name = name.rpartition(".")
            return model.get_submodule(parent_name), child_name, module
    raise ValueError("the model has no convolution to bake the normalization into")


def bake_normalization(fused_model: nn.Module, mean: Sequence[float], std: Sequence[float],
                       pixel_scale: float = 255.0, subtract_mean: bool = True) -> nn.Module:
    """A copy of ``fused_model`` that takes raw RGB in ``0..pixel_scale``.

    ``baked(x) == fused_model((x / pixel_scale - mean) / std)``. The first
    registered convolution must be the network's first operation (true for
    FastViT: the stem's first fused conv). With ``subtract_mean=False`` the
    caller subtracts ``pixel_scale * mean`` itself (Core ML image ``bias``).
    """
    baked = copy.deepcopy(fused_model).eval()
    parent, child_name, conv = _first_conv(baked)
    if conv.groups != 1 or conv.in_channels != len(mean) or len(mean) != len(std):
        raise ValueError(f"cannot bake {len(mean)}-channel normalization into a conv with "
                         f"{conv.in_channels} input channels and {conv.groups} groups")
    setattr(parent, child_name, RawPixelConv(conv, mean, std, pixel_scale, subtract_mean))
    return baked


# ---------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------


def eval_preprocess(cfg: dict, image_size: int, raw_pixels: bool = False):
    """The variant's eval transform (resize, centre crop, normalize) on a uint8
    RGB tensor; ``raw_pixels`` ends with 0..255 floats for a baked-in model."""
    from fastvit.data import build_eval_transform

    mean, std = cfg["mean"], cfg["std"]
    if raw_pixels:
        mean, std = (0.0,) * len(mean), (1 / 255.0,) * len(std)
    return build_eval_transform(image_size, float(cfg["crop_pct"]), cfg["interpolation"],
                                mean, std)


def preprocess_from_metadata(metadata: dict[str, str], fallback_cfg: dict,
                             image_size: int | None = None):
    """The transform an exported file asks for (its ``fastvit.*`` metadata), else
    the fallback config's."""
    import json

    cfg = dict(fallback_cfg)
    for key in ("mean", "std"):
        if f"fastvit.{key}" in metadata:
            cfg[key] = tuple(json.loads(metadata[f"fastvit.{key}"]))
    if "fastvit.crop_pct" in metadata:
        cfg["crop_pct"] = float(metadata["fastvit.crop_pct"])
    if "fastvit.interpolation" in metadata:
        cfg["interpolation"] = metadata["fastvit.interpolation"]
    size = int(metadata.get("fastvit.image_size", image_size or cfg["input_size"][-1]))
    raw = metadata.get("fastvit.input", "normalized").startswith("raw_pixels")
    return eval_preprocess(cfg, size, raw)
