"""Numerical checks shared by the demo, the tests and export.

Fresh BatchNorm statistics (mean 0, var 1) and tiny layer scales hide folding
bugs, so equivalence is always checked after :func:`randomize_model_stats`.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_model_stats(model: nn.Module, seed: int = 0, layer_scale: tuple[float, float]
                          = (0.1, 0.5)) -> nn.Module:
    """Give every BatchNorm random running stats and affine params, every LayerNorm
    random affine params, and every layer-scale parameter (named ``gamma`` or
    ``layer_scale*``: ours, timm's and the official release's) uniform values in
    ``layer_scale``."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = layer_scale

    def uniform(t: torch.Tensor, a: float, b: float) -> torch.Tensor:
        return (torch.rand(t.shape, generator=g) * (b - a) + a).to(t)

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_((torch.randn(m.running_mean.shape, generator=g) * 0.2)
                                 .to(m.running_mean))
            m.running_var.copy_(uniform(m.running_var, 0.5, 2.0))
            if m.affine:
                m.weight.copy_(uniform(m.weight, 0.5, 1.5))
                m.bias.copy_((torch.randn(m.bias.shape, generator=g) * 0.1).to(m.bias))
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            m.weight.copy_(uniform(m.weight, 0.5, 1.5))
            m.bias.copy_((torch.randn(m.bias.shape, generator=g) * 0.1).to(m.bias))
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma" or leaf.startswith("layer_scale"):
            p.copy_(uniform(p, lo, hi))
    return model


@torch.no_grad()
def max_abs_difference(model_a: nn.Module, model_b: nn.Module,
                       inputs: torch.Tensor | tuple[int, ...] = (2, 3, 256, 256),
                       seed: int = 0, relative: bool = False) -> float:
    """Max |a(x) - b(x)| over random input ``x`` (eval mode); ``relative`` divides
    by the max |a(x)| so the number is comparable across output scales."""
    if not isinstance(inputs, torch.Tensor):
        g = torch.Generator().manual_seed(seed)
        inputs = torch.randn(inputs, generator=g)
    was = model_a.training, model_b.training
    model_a.eval()
    model_b.eval()
    try:
        out_a, out_b = _flat(model_a(inputs)), _flat(model_b(inputs))
    finally:
        model_a.train(was[0])
        model_b.train(was[1])
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(out_a, out_b,
                                                                          strict=True))
    if relative:
        scale = max(float(a.float().abs().max()) for a in out_a)
        return diff / max(scale, 1e-12)
    return diff


def _flat(out: torch.Tensor | list | tuple) -> list[torch.Tensor]:
    return list(out) if isinstance(out, list | tuple) else [out]
