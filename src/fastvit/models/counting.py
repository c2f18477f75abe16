"""Model size and compute counts (parameters, MACs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sdpa_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    # Q @ K^T and attn @ V: 2 matmuls of B*H*N*M*D multiply-adds each = 2 FLOPs per MAC.
    b, h, n, d = q_shape
    m = k_shape[-2]
    return 2 * (2 * b * h * n * m * d)


def _sdpa_mapping() -> dict:
    """Count the CPU fused-attention kernel too (torch's counter knows only the GPU ones)."""
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = lambda q, k, v, *a, out_shape=None, **kw: _sdpa_flops(q, k, v)
    return mapping


@torch.no_grad()
def count_gmacs(model: nn.Module, image_size: int = 256, in_chans: int = 3) -> float:
    """Multiply-accumulates (x1e9) of one forward pass at batch 1, counted by
    ``torch.utils.flop_counter`` (convolutions, matmuls and attention; FLOPs / 2)."""
    was = model.training
    model.eval()
    x = torch.zeros(1, in_chans, image_size, image_size,
                    device=next(model.parameters()).device)
    try:
        with FlopCounterMode(display=False, custom_mapping=_sdpa_mapping()) as counter:
            model(x)
    finally:
        model.train(was)
    return counter.get_total_flops() / 2e9
