"""Crash-safe file writing: a reader never sees a half-written file.

Everything is written to a temporary file in the destination folder, flushed
and fsynced, then renamed over the destination (atomic on POSIX), and the
folder is fsynced so the rename itself survives a power cut. The file gets the
permissions a plain ``open()`` would give it (``0o666`` less the umask), or
those of the file it replaces: teammates on a shared cluster can read it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from fastvit.errors import OutputWriteError

#: errors of the storage, not of the program: reported as one line naming the file
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                            errno.EPERM, errno.EFBIG, errno.EIO})


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place.

    A storage failure (disk full, quota, read-only, no permission) while creating,
    writing or moving it raises :class:`~fastvit.errors.OutputWriteError` naming ``path``;
    the temporary file is removed either way.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _target_mode(path))
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as err:
        if isinstance(err, OutputWriteError) or err.errno not in STORAGE_ERRNOS:
            raise
        kept = "the previous file is untouched" if path.exists() else "nothing was written"
        failure = OutputWriteError(f"cannot write {path}: {err.strerror}; {kept}")
        failure.errno = err.errno  # (no strerror: str() stays the message above)
        raise failure from err
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    """The replaced file's permission bits, else what ``open()`` would create."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems refuse to open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


class _WriteErrorSink:
    """A binary file that keeps its first failed write: ``torch.save`` reports a full
    disk only as a cryptic ``RuntimeError`` of its zip writer ("unexpected pos ...")."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.error = fh, None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.fh.flush()


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` that raises the ``OSError`` of a failed write (disk
    full, quota, file size limit, I/O error) rather than the zip writer's message."""
    with open(path, "wb") as fh:
        sink = _WriteErrorSink(fh)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise


def atomic_torch_save(obj: Any, path: str | os.PathLike,
                      check: Callable[[Path], None] | None = None) -> Path:
    """``torch.save`` that never leaves a partial file (use only tensors and plain
    Python containers/scalars so the file loads with ``weights_only=True``).

    ``check(tmp_path)`` may inspect the written file before it replaces ``path``;
    raising there leaves ``path`` as it was. A failed write raises ``OSError``.
    """
    def write(tmp: Path) -> None:
        torch_save(obj, tmp)
        if check is not None:
            check(tmp)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def json_text(obj: Any) -> str:
    """Human-readable JSON (NaN and inf written as null; tensors as lists)."""
    return json.dumps(_finite(obj), indent=2, default=_json_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`json_text` written atomically."""
    return atomic_write_text(path, json_text(obj))
