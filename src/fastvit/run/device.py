"""Where and in which precision a command computes: device, mixed precision, CPU threads.

Every command spells these the same way: ``--device auto|cpu|cuda|cuda:N``,
``--amp auto|none|bf16|fp16`` and ``--threads N``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from fastvit.errors import ConfigError

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
LEGACY_AMP_ON = "on"  # the old on/off switch of the task commands: bf16 on CPU, auto on CUDA
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def default_workers(processes: int = 1) -> int:
    """DataLoader workers per process: the machine's cores shared by ``processes``, one
    core left for the training process itself, at most 8 (0 on a single core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, max(0, (cores or 1) // max(processes, 1) - 1))


def check_device_name(name: str) -> str:
    """Validate a ``--device`` value (for argparse ``type=``)."""
    if not _DEVICE_PATTERN.match(name):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    return name


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available (this process's GPU under torchrun), else the CPU."""
    name = check_device_name(name or "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available here")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA "
                              f"device(s) here")
        torch.cuda.set_device(device)
    return device


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device`` (None: full precision).

    ``auto``: bf16 on CUDA (fp16 where bf16 is unsupported), full precision on
    CPU; ``bf16`` works on both; ``fp16`` needs CUDA.
    """
    amp = amp or "none"
    if amp == LEGACY_AMP_ON:
        amp = "auto" if device.type == "cuda" else "bf16"
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 autocast needs a CUDA device; use --amp bf16 on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, active for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` intra-op CPU threads inside the block (None: leave torch's choice).

    On a shared machine, two OpenMP threads next to another busy process can
    make each step many times slower; ``--threads 1`` is the way out.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def process_settings(device: torch.device, *, threads: int | None = None,
                     deterministic: bool = False) -> Iterator[None]:
    """Process-wide switches of a run (CPU threads, deterministic kernels, cuDNN
    autotuning), restored afterwards so an in-process caller is unaffected."""
    import os

    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    try:
        with cpu_threads(threads):
            if deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True, warn_only=True)  # warn if none exists
                torch.backends.cudnn.benchmark = False
            elif device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
