"""Exponential moving average of the weights (and BatchNorm buffers).

A thin layer over ``torch.optim.swa_utils.AveragedModel``: with
``use_buffers=True`` the running statistics are averaged too, so the EMA model
can be evaluated (and reparameterized) on its own.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, decay: float = 0.9995) -> AveragedModel:
    """EMA copy of ``model`` (an unwrapped module, not DDP). ``ema.module`` is the averaged net.

    The first ``update_parameters`` call copies the weights; each later call does
    ``ema = decay * ema + (1 - decay) * model``.
    """
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema

