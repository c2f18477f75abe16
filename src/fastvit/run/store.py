"""The run checkpoint store: atomic, rotating, resumable, loadable with ``weights_only=True``.

One format for every trainer (``format: fastvit-run-v1``, ``task``:
classification, detection, segmentation or hand). A checkpoint is a plain dict
of tensors and primitives: ``model``, ``optimizer``, ``scheduler``, ``scaler``
(and ``ema``, ``ema_n_averaged``) state dicts, the position ``step``
(optimizer steps done), ``epoch`` and ``batch_in_epoch`` (micro-batches of that
epoch consumed), ``best_score``, ``rng`` (one entry per rank), ``config`` (the
recipe), ``metrics``, ``world_size`` and ``metadata`` (class names, variant...:
what :mod:`fastvit.checkpoints` reads when the file is used as weights).

Files in the run folder: ``ckpt_step00001234.pt`` (the newest ``keep_last``
are kept) and ``best.pt``. Writes go through
:func:`fastvit.files.atomic_torch_save`, so a kill during a save leaves the
previous files intact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from fastvit.errors import CheckpointError, FastVitError
from fastvit.files import atomic_torch_save

RUN_FORMAT = "fastvit-run-v1"
CKPT_PATTERN = re.compile(r"^ckpt_step(\d+)\.pt$")
BEST_NAME = "best.pt"
REQUIRED = ("model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "config")


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


def resolve_resume(resume: str | Path, out_dir: str | Path) -> Path | None:
    """``auto``: the newest checkpoint in ``out_dir`` (None when there is none); else a path."""
    if str(resume) == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if path.is_dir():
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"--resume: no ckpt_step*.pt checkpoint in {path}")
        return newest
    if not path.is_file():
        raise CheckpointError(f"--resume: no such checkpoint file: {path}")
    return path


def save_checkpoint(state: dict[str, Any], out_dir: str | Path, step: int,
                    keep_last: int) -> Path:
    """Write ``ckpt_step<step>.pt`` atomically, then drop all but the newest ``keep_last``."""
    require_finite(state, step)
    path = Path(out_dir) / checkpoint_name(step)
    atomic_torch_save(state, path)
    for _, old in list_checkpoints(out_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def save_best(state: dict[str, Any], out_dir: str | Path) -> Path:
    require_finite(state, state.get("step", -1))
    return atomic_torch_save(state, Path(out_dir) / BEST_NAME)


def require_finite(state: dict[str, Any], step: int) -> None:
    """Never replace a good checkpoint with a diverged one."""
    for section in ("model", "ema"):
        weights = state.get(section) or {}
        for name, tensor in weights.items():
            if torch.is_tensor(tensor) and tensor.is_floating_point() \
                    and not bool(torch.isfinite(tensor).all()):
                raise DivergedError(f"refusing to save step {step}: {section} tensor "
                                    f"{name!r} is not finite")


def load_run_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read a run checkpoint safely (``weights_only=True``); ``task`` must match if given.

    Files of earlier releases (``fastvit-train-v1`` and the task commands'
    ``checkpoint.pt``) are read too and returned in the current layout.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt/unsafe files of any kind
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a fastvit run checkpoint")
    state = _upgrade(state)
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a fastvit run checkpoint (missing "
                              f"{', '.join(missing)}); to start from its weights use "
                              f"--pretrained instead of --resume")
    if task is not None and state.get("task") != task:
        raise CheckpointError(f"{path} is a {state.get('task')!r} checkpoint, not a {task!r} one")
    return state


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints of earlier releases in the current layout."""
    if state.get("format") == "fastvit-train-v1":
        state = dict(state, format=RUN_FORMAT, task="classification")
        state.setdefault("best_score", state.get("best_top1", -1.0))
    elif "format" not in state and "task" in state and "recipe" in state:
        extra = dict(state.get("extra") or {})
        state = dict(state, format=RUN_FORMAT, config=state["recipe"],
                     epoch=int(extra.get("epoch", 0)), batch_in_epoch=0, metadata=extra,
                     best_score=-1.0)
        state.setdefault("optimizer", {})
        state.setdefault("scheduler", {})
    return state


def clean_stale_temp_files(out_dir: str | Path) -> None:
    """Remove temporary files left by a save that was killed half-way."""
    folder = Path(out_dir)
    if folder.is_dir():
        for tmp in folder.glob(".ckpt_step*.tmp"):
            tmp.unlink(missing_ok=True)
        for tmp in folder.glob(f".{BEST_NAME}.*.tmp"):
            tmp.unlink(missing_ok=True)


def resolve_trained(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``best.pt`` (else its newest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        best = path / BEST_NAME
        newest = best if best.is_file() else latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"{path} holds no best.pt and no ckpt_step*.pt checkpoint")
        return newest
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path
