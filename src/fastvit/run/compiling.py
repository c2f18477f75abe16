"""``torch.compile`` for the trainers and evaluation, with the CPU guard it needs.

The hazard (torch 2.14.1, CPU): Inductor's *layout optimization* switches the
convolutions of a training graph to channels_last on its own, and the oneDNN
backward of a 1x1 stride-2 convolution in channels_last corrupts the heap at
128 px and more (``corrupted size vs. prev_size`` / segfault; the same kernel
bug :mod:`fastvit.train.memory_format` guards in eager mode). FastViT has one
such convolution, the stem's ``conv_scale`` branch, so a compiled fastvit_t8
training step died in its first steps. Minimal repro (``docs/training.md``,
"Compiled training"): compile ``nn.Conv2d(3, 48, 1, stride=2)`` and back-propagate
a contiguous ``16x3x128x128`` input. On CPU we therefore compile with layout
optimization off: the graph keeps eager's layouts (contiguous, or channels_last
with the guarded convolutions contiguous when ``--channels-last``). CUDA is
compiled with Inductor's defaults.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

# Inductor options per device type ("default" mode: "max-autotune" spends many minutes
# benchmarking kernels at start-up, "reduce-overhead" (CUDA graphs) clashes with
# DDP, gradient accumulation and changing batch shapes).
CPU_OPTIONS = {"layout_optimization": False}


def compile_options(device: torch.device | str) -> dict[str, object]:
    """Inductor options for ``device`` (see the module docstring)."""
    return dict(CPU_OPTIONS) if torch.device(device).type == "cpu" else {}


def compile_model(model: nn.Module, device: torch.device | str, *,
                  dynamic: bool | None = None) -> nn.Module:
    """``torch.compile(model)`` with this project's guards; the returned module shares
    ``model``'s parameters (checkpoints keep using ``model`` itself)."""
    options = compile_options(device)
    log.info("torch.compile: inductor, options %s", options or "default")
    return torch.compile(model, options=options or None, dynamic=dynamic)


def describe(compiled: bool, device: torch.device | str) -> str:
    """For run headers: ``torch.compile (inductor, layout_optimization=False)`` or ``eager``."""
    if not compiled:
        return "eager"
    options = compile_options(device)
    extra = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"torch.compile (inductor{', ' + extra if extra else ''})"
