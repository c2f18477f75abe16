"""How PyTorch's OpenMP threads wait between parallel regions: set before torch loads.

PyTorch's CPU kernels run on an OpenMP pool (libgomp in the Linux wheels) that reads its
wait settings once, when torch loads. libgomp's default spins ~3 ms at every barrier: with
more busy threads than cores (training beside an export, a test run or another model)
training collapsed 3-10x. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) cured that but
cost ~40% of training and ~55% of eager inference throughput alone, as every op paid a
wake-up. So ``import fastvit`` asks for a short bounded spin (``GOMP_SPINCOUNT=1000``,
about 10 us: enough to bridge the gap between two ops) and then sleep;
``benchmarks/openmp_wait.py`` measures the choice (docs/deployment.md). ``FASTVIT_SPIN=1``
(a dedicated host) or a setting of your own leaves the environment alone.

This module imports nothing but ``os``: ``fastvit/__init__.py`` uses it before torch.
"""

from __future__ import annotations

import os

#: the dedicated-host switch: every spinning default of every runtime back on
SPIN_ENV = "FASTVIT_SPIN"
#: sleep after a short spin; libgomp's GOMP_SPINCOUNT counts ~100 iterations per
#: microsecond; other OpenMP runtimes (libomp on macOS) read only OMP_WAIT_POLICY
OPENMP_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}


def spin_requested() -> bool:
    """``FASTVIT_SPIN`` is 1/true/yes/on in the environment."""
    return os.environ.get(SPIN_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def openmp_wait_to_set() -> dict[str, str]:
    """:data:`OPENMP_WAIT`, or nothing when ``FASTVIT_SPIN=1`` or the user set either
    variable. ``import fastvit`` puts it in the environment first thing."""
    if spin_requested() or any(name in os.environ for name in OPENMP_WAIT):
        return {}
    return dict(OPENMP_WAIT)


def describe() -> str:
    """The OpenMP wait settings in effect, for run headers."""
    settings = [f"{name}={os.environ[name]}" for name in OPENMP_WAIT if name in os.environ]
    return "OpenMP wait " + (", ".join(settings) or "libgomp default (spins ~3 ms)")
