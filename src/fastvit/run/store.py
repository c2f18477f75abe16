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
are kept) and ``best.pt``. The save policy keeps at least one good checkpoint
on disk at every moment after the first save:

* writes are atomic (:func:`fastvit.files.atomic_torch_save`: temp file, fsync,
  rename) and the temp file is read back (zip directory) before it replaces
  anything, so a kill, a full disk or a short write leaves the previous files
  as they were and no temp file behind;
* older checkpoints are deleted only after the new one is in place, and only
  those at or before the step just written (files of a later step, left by an
  attempt that went further, are not counted as "newest");
* ``--resume auto`` skips unreadable files (naming them, never deleting them)
  and falls back to ``best.pt`` only when no ``ckpt_step*.pt`` file is readable.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fastvit.errors import CheckpointError, FastVitError, OutputWriteError
from fastvit.files import atomic_torch_save

RUN_FORMAT = "fastvit-run-v1"
CKPT_PATTERN = re.compile(r"^ckpt_step(\d+)\.pt$")
BEST_NAME = "best.pt"
REQUIRED = ("model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "config")


class DivergedError(FastVitError):
    """The loss (or a weight) became NaN/inf; training stops, checkpoints stay untouched."""


class UnreadableCheckpointError(CheckpointError):
    """The file cannot be read at all: truncated, empty, not a torch file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read checkpoint {path}: {reason}")
        self.path, self.reason = Path(path), reason

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.reason)


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, quota, I/O error); the files
    already on disk are untouched and no temporary file is left."""


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


def resume_candidates(resume: str | Path, out_dir: str | Path) -> list[Path]:
    """The files ``--resume`` tries, in order.

    A file: itself. ``auto`` (the folder ``out_dir``) or a folder: its
    ``ckpt_step*.pt`` newest first, then ``best.pt`` (an older state, the last
    resort); ``auto`` on a folder without any gives ``[]`` (a fresh start).
    """
    auto = str(resume) == "auto"
    folder = Path(out_dir) if auto else Path(resume)
    if not auto and not folder.is_dir():
        if not folder.is_file():
            raise CheckpointError(f"--resume: no such checkpoint file: {folder}")
        return [folder]
    found = [path for _, path in reversed(list_checkpoints(folder))]
    if (folder / BEST_NAME).is_file():
        found.append(folder / BEST_NAME)
    if not found and not auto:
        raise CheckpointError(f"--resume: no ckpt_step*.pt checkpoint in {folder}")
    return found


def load_resumable(candidates: list[Path], task: str | None,
                   warn: Callable[[str], None]) -> tuple[dict[str, Any], Path]:
    """The first readable checkpoint of ``candidates`` (see :func:`resume_candidates`).

    Unreadable files are skipped with a warning naming them and left where they
    are; a single explicit file must be readable. Only unreadable files are
    skipped: one of another task or recipe is an error.
    """
    skipped: list[str] = []
    for i, path in enumerate(candidates):
        try:
            state = load_run_checkpoint(path, task)
        except UnreadableCheckpointError as err:
            if len(candidates) == 1:
                raise
            skipped.append(f"{path.name} ({err.reason})")
            following = (f"trying {candidates[i + 1].name}" if i + 1 < len(candidates)
                         else "no other checkpoint left")
            warn(f"warning: --resume: skipping {path}: {err.reason}; the file is left in "
                 f"place; {following}")
            continue
        if path.name == BEST_NAME and len(candidates) > 1:
            warn(f"warning: --resume: no ckpt_step*.pt checkpoint is readable; resuming "
                 f"{path} (step {state['step']}, the best evaluation so far)")
        return state, path
    raise CheckpointError(f"--resume: no readable checkpoint in {candidates[0].parent}: "
                          f"{'; '.join(skipped)}. The files are left in place; move them away "
                          f"to start from scratch")


def save_checkpoint(state: dict[str, Any], out_dir: str | Path, step: int,
                    keep_last: int) -> Path:
    """Write ``ckpt_step<step>.pt`` atomically, then drop all but the newest ``keep_last``."""
    require_finite(state, step)
    path = write_checkpoint(state, Path(out_dir) / checkpoint_name(step))
    prune_checkpoints(out_dir, keep_last, step)
    return path


def save_best(state: dict[str, Any], out_dir: str | Path) -> Path:
    require_finite(state, state.get("step", -1))
    return write_checkpoint(state, Path(out_dir) / BEST_NAME)


def write_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Atomic, read-back-checked write; on failure :class:`CheckpointWriteError`, with
    ``path`` and every other file as they were and no temp file left."""
    try:
        return atomic_torch_save(state, path, check=_check_zip)
    except (OSError, RuntimeError) as err:
        if isinstance(err, OutputWriteError) and err.__cause__ is not None:
            err = err.__cause__  # the storage's own error; the message below names the file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        newest = latest_checkpoint(path.parent)
        kept = (f"the newest checkpoint, {newest}, is untouched" if newest is not None
                else "no earlier checkpoint was touched")
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {reason}; {kept} and no "
                                   f"temporary file is left. Free space (or fix the folder), "
                                   f"then continue with --resume auto") from None


def _check_zip(path: Path) -> None:
    """The written file is a complete torch zip archive (its directory is at the end)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise OSError(f"the written file does not read back ({err})") from None
    if not any(name.endswith("data.pkl") for name in names):
        raise OSError("the written file does not read back (no data.pkl record)")


def prune_checkpoints(out_dir: str | Path, keep_last: int, step: int) -> None:
    """Delete ``ckpt_step*.pt`` files older than the newest ``keep_last`` at or before
    ``step`` (the one just written counts; later steps, from an earlier attempt that
    went further, are neither counted nor deleted)."""
    done = [path for s, path in list_checkpoints(out_dir) if s <= step]
    for old in done[:-max(keep_last, 1)]:
        old.unlink(missing_ok=True)


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
        raise UnreadableCheckpointError(path, first.split(". ")[0]) from None
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
