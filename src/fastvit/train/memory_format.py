"""channels_last for training, with a guard for a CPU kernel crash.

On CPU (torch 2.14, oneDNN) the backward pass of a 1x1 stride-2 convolution
with a channels_last input of 128 px or more crashes the process (segfault /
heap corruption); ``benchmarks/train_throughput.py --channels-last`` and
``tests/test_train_units.py`` exercise it. FastViT (ours and timm's) has one
such convolution, the ``conv_scale`` branch of the first stem block. On CPU we
run exactly those convolutions in the default layout and hand their output back
as channels_last, which keeps the ~20% speed-up of channels_last on CPU for the
rest of the network. CUDA is unaffected and converted as usual.
"""

from __future__ import annotations

import torch
from torch import nn


def _is_guarded(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
            and conv.stride != (1, 1) and conv.groups == 1)


def _to_contiguous(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(),) + tuple(args[1:])


def _to_channels_last(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous(memory_format=torch.channels_last)


def to_channels_last(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Convert ``model`` (in place) to channels_last; on CPU keep strided 1x1 convs contiguous."""
    model.to(memory_format=torch.channels_last)
    if torch.device(device).type != "cpu":
        return model
    for module in model.modules():
        if _is_guarded(module) and not getattr(module, "_fastvit_cl_guard", False):
            module.to(memory_format=torch.contiguous_format)
            module.register_forward_pre_hook(_to_contiguous)
            module.register_forward_hook(_to_channels_last)
            module._fastvit_cl_guard = True
    return model
