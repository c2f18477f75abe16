"""AdamW with weight-decay groups, and the linear learning-rate scaling rule.

Learning-rate scaling follows the linear scaling rule: the recipe's ``lr`` is
given at ``lr_base_batch`` images per optimizer step (the paper: 1e-3 at 1024)
and the run uses ``lr * global_batch / lr_base_batch``. ``warmup_lr`` and
``min_lr`` are absolute (not scaled), as in the official training script.
"""

from __future__ import annotations

import torch
from torch import nn

from fastvit.models.layers import LayerScale2d


def scaled_lr(lr: float, global_batch: int, lr_base_batch: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): lr grows with the global batch."""
    return lr * global_batch / lr_base_batch


def no_decay_parameter_names(model: nn.Module, *, decay_layer_scale: bool = False) -> set[str]:
    """Biases, normalization weights (every tensor with ndim <= 1) and layer-scale gammas."""
    names = {name for name, p in model.named_parameters() if p.ndim <= 1}
    if not decay_layer_scale:
        for module_name, module in model.named_modules():
            if isinstance(module, LayerScale2d):
                prefix = f"{module_name}." if module_name else ""
                names.update(f"{prefix}{n}" for n, _ in module.named_parameters())
    return names


def param_groups(model: nn.Module, weight_decay: float, *,
                 decay_layer_scale: bool = False) -> list[dict]:
    """Two AdamW groups: decayed weights, and everything listed by ``no_decay_parameter_names``."""
    skip = no_decay_parameter_names(model, decay_layer_scale=decay_layer_scale)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    decay_layer_scale: bool = False) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay, decay_layer_scale=decay_layer_scale)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
