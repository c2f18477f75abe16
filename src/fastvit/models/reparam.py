"""Structural reparameterization of any module tree that contains FastViT blocks,
and the deploy form's extra BatchNorm folding."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

from fastvit.models.layers import AttentionBlock, ConvBN, Reparameterizable, fuse_tree

M = TypeVar("M", bound=nn.Module)


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
    fuse_tree(model)
    return model


def is_fused(model: nn.Module) -> bool:
    """True when no reparameterizable block in ``model`` still has train-time branches."""
    return all(getattr(m, "reparam_conv", None) is not None
               for m in model.modules() if isinstance(m, Reparameterizable))


def _conv_from(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode)
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)
    return fused.to(weight.device)


@torch.no_grad()
def fold_batchnorms(model: M) -> M:
    """Fold the eval BatchNorms a fused FastViT still has, in place; returns ``model``.

    Reparameterization keeps ConvFFN's conv+BN and the attention block's
    pre-norm (fused checkpoints of the official release and timm keep them, so
    fused state dicts stay interchangeable). Both are affine maps next to a
    linear layer: the first folds into its conv, the second into the bias-free
    qkv projection that consumes it (``W (s*x + t) = (W diag(s)) x + W t``).
    Exact up to float rounding. The result is the *deploy form* every export
    and ``fastvit evaluate`` use; its state dict is no longer a checkpoint layout.
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


def deploy_form(model: M, inplace: bool = False) -> M:
    """Reparameterize and fold the remaining BatchNorms: the network that ships."""
    return fold_batchnorms(reparameterize(model, inplace=inplace))
