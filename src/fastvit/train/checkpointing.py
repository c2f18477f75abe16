"""Training checkpoints: atomic, rotating, resumable, loadable with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitives:
``model``, ``ema``, ``optimizer``, ``scheduler``, ``scaler`` (state dicts),
``step`` (optimizer steps done), ``epoch`` (current epoch), ``batch_in_epoch``
(micro-batches of that epoch already consumed), ``rng`` (one entry per rank),
``config`` (the recipe as a plain dict), ``variant``, ``classes``,
``world_size``, ``metrics`` and ``best_top1``.

Files: ``ckpt_step00001234.pt`` every ``save_every_steps`` steps and at each
epoch end (the newest ``keep_last`` are kept) and ``best.pt`` (the epoch with
the best EMA top-1). Writes go through :func:`fastvit.io.atomic_torch_save`,
so a kill during a save leaves the previous files intact.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvit.errors import CheckpointError, FastVitError
from fastvit.io import atomic_torch_save

CKPT_PATTERN = re.compile(r"^ckpt_step(\d+)\.pt$")
BEST_NAME = "best.pt"


class DivergedError(FastVitError):
    """The loss (or a weight) became NaN/inf; training stops, checkpoints stay untouched."""


def checkpoint_name(step: int) -> str:
    return f"ckpt_step{step:08d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Periodic checkpoints in ``out_dir`` as ``(step, path)``, oldest first."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CKPT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str, out_dir: str | Path) -> Path | None:
    """``auto``: the newest checkpoint in ``out_dir`` (None when there is none); else a path."""
    if resume == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume: no such checkpoint file: {path}")
    return path


def save_checkpoint(state: dict[str, Any], out_dir: str | Path, step: int,
                    keep_last: int) -> Path:
    """Write ``ckpt_step<step>.pt`` atomically, then drop all but the newest ``keep_last``."""
    _require_finite(state, step)
    path = Path(out_dir) / checkpoint_name(step)
    atomic_torch_save(state, path)
    for _, old in list_checkpoints(out_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def save_best(state: dict[str, Any], out_dir: str | Path) -> Path:
    _require_finite(state, state.get("step", -1))
    return atomic_torch_save(state, Path(out_dir) / BEST_NAME)


def _require_finite(state: dict[str, Any], step: int) -> None:
    """Never replace a good checkpoint with a diverged one."""
    for section in ("model", "ema"):
        weights = state.get(section) or {}
        for name, tensor in weights.items():
            if torch.is_tensor(tensor) and tensor.is_floating_point() \
                    and not bool(torch.isfinite(tensor).all()):
                raise DivergedError(f"refusing to save step {step}: {section} tensor "
                                         f"{name!r} is not finite")


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt/unsafe files of any kind
        raise CheckpointError(f"cannot read training checkpoint {path}: {err}") from None
    required = {"model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "config"}
    if not isinstance(state, dict) or not required <= set(state):
        missing = sorted(required - set(state)) if isinstance(state, dict) else sorted(required)
        raise CheckpointError(f"{path} is not a fastvit training checkpoint "
                              f"(missing {', '.join(missing)}); to start from its weights use "
                              f"--checkpoint instead of --resume")
    return state


def clean_stale_temp_files(out_dir: str | Path) -> None:
    """Remove temporary files left by a save that was killed half-way."""
    folder = Path(out_dir)
    if folder.is_dir():
        for tmp in folder.glob(".ckpt_step*.tmp"):
            tmp.unlink(missing_ok=True)
        for tmp in folder.glob(f".{BEST_NAME}.*.tmp"):
            tmp.unlink(missing_ok=True)


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
