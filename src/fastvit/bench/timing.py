"""Latency measurement shared by ``fastvit bench``, the demo and the benchmarks.

Timings on shared machines are noisy, so we report the median (and p90) of
many runs after warm-up, and compare implementations only within one process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    runs: int

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "runs": self.runs}

    @classmethod
    def from_samples(cls, samples: list[float]) -> Timing:
        """Median and p90 (nearest rank) of latency samples in milliseconds."""
        values = sorted(samples)
        p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
        return cls(statistics.median(values), p90, len(values))


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_callable(fn: Callable[[], object], *, runs: int = 50, warmup: int = 10,
                  device: torch.device | str | None = None) -> Timing:
    """Median / p90 wall-clock latency of ``fn()`` in milliseconds.

    On CUDA each run is bracketed by CUDA events (GPU time, not launch time).
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(runs):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return Timing.from_samples(samples)


@torch.inference_mode()
def time_model(model: torch.nn.Module, inputs: torch.Tensor, *, runs: int = 50,
               warmup: int = 10) -> Timing:
    """Latency of ``model(inputs)`` in eval mode without autograd."""
    model.eval()
    return time_callable(lambda: model(inputs), runs=runs, warmup=warmup, device=inputs.device)
