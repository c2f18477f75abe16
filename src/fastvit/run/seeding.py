"""Seeds and RNG state: what makes a run resumable bit for bit.

Every random draw of a run (augmentation, MixUp/CutMix, drop path, the data
order) is a function of where the run is, ``(seed, epoch, position, rank)``,
never of how it got there; RNG states are stored in checkpoints as plain
tensors and numbers (``weights_only``-safe).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (independent streams per tuple)."""
    high, low = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2)
    return (int(high) << 31) ^ int(low)


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU, and CUDA when present).

    ``torch.manual_seed`` would also do it but costs ~0.25 ms (it visits every
    backend); this runs once per micro-batch and once per sample.
    """
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block under RNGs seeded with ``seed``.

    In the main process the previous states are restored afterwards; DataLoader
    worker processes own their RNGs, so there the (costly) restore is skipped.
    """
    if get_worker_info() is not None:
        seed_all(seed)
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state()
    try:
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.default_generator.manual_seed(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


# ---------------------------------------------------------------------------
# RNG state (python, numpy, torch CPU, CUDA), stored as weights_only-safe values
# ---------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
