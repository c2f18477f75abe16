"""Helpers of the guard tests (tests/test_guard_*.py)."""

from __future__ import annotations

import torch
from torch import nn

from fastvit.models.layers import AttentionBlock, RepMixerBlock


def block_forward_counts(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """How often each FastViT block's ``forward`` runs during one train-mode forward and
    backward pass: 2 per block when gradient checkpointing recomputes it, else 1.

    Counted by wrapping each block's ``forward`` (module forward hooks do not fire
    during torch's non-reentrant checkpoint recomputation)."""
    counts: dict[str, int] = {}
    wrapped = []
    for name, module in model.named_modules():
        if isinstance(module, RepMixerBlock | AttentionBlock):
            counts[name] = 0

            def forward(*args, _name=name, _inner=module.forward, **kwargs):
                counts[_name] += 1
                return _inner(*args, **kwargs)

            module.forward = forward
            wrapped.append(module)
    assert counts, "no FastViT blocks found"
    model.train()
    try:
        out = model(x)
        outputs = out if isinstance(out, list | tuple) else [out]
        sum(o.float().sum() for o in outputs).backward()
    finally:
        for module in wrapped:
            del module.forward
    return counts
