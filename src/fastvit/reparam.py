"""Structural reparameterization of any module tree that contains FastViT blocks."""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import nn

from fastvit.layers import Reparameterizable

M = TypeVar("M", bound=nn.Module)


def _fuse(module: nn.Module) -> None:
    if isinstance(module, Reparameterizable):
        module.reparameterize()  # each block folds its own children
        return
    for child in module.children():
        _fuse(child)


def reparameterize(model: M, inplace: bool = False) -> M:
    """Fold every train-time branch into single convolutions.

    Works on any module tree (a FastVit, a detector holding one as backbone, a
    bare block), is idempotent, and returns the model in eval mode: the fused
    model computes what the train-time model computes in eval mode, since
    BatchNorm running statistics are what get folded.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    _fuse(model)
    for m in model.modules():
        if hasattr(m, "inference_mode") and isinstance(m.inference_mode, bool):
            m.inference_mode = True
    return model


def is_fused(model: nn.Module) -> bool:
    """True when no reparameterizable block in ``model`` still has train-time branches."""
    return all(getattr(m, "reparam_conv", None) is not None
               for m in model.modules() if isinstance(m, Reparameterizable))
