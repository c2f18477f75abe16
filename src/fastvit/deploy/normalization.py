"""ImageNet normalization baked into a fused model's first convolution (raw-pixel input)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


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
