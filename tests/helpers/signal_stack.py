"""Is this thread's alternate signal stack still mapped?

OpenVINO's CPU plugin (2026.4) gives the thread that first compiles on a ``Core`` a
fresh alternate signal stack and, when that ``Core`` goes away, frees it and puts back
the stack it found, if its own is still the current one. Two ``Core`` objects dropped in
the order they were made leave the thread on the first one's freed stack; the next
signal handled there (Python installs its handlers with ``SA_ONSTACK``: SIGCHLD once a
DataLoader has had workers, SIGALRM from pytest-timeout) kills the process with SIGSEGV,
tests later and far away from the cause. tests/conftest.py checks after every test.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import sys

SS_DISABLE = 2  # <signal.h>
MS_ASYNC = 1  # <sys/mman.h>


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" \
    else None


def unmapped_signal_stack() -> str | None:
    """A description of this thread's alternate signal stack when its memory is not
    mapped (``msync`` answers ENOMEM), else ``None`` (also off Linux)."""
    if _libc is None:
        return None
    stack = _StackT()
    if _libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    if stack.ss_flags & SS_DISABLE or not stack.ss_sp:
        return None
    start = stack.ss_sp - stack.ss_sp % mmap.PAGESIZE
    length = stack.ss_sp + stack.ss_size - start
    if _libc.msync(ctypes.c_void_p(start), ctypes.c_size_t(length), MS_ASYNC) == 0:
        return None
    if ctypes.get_errno() != errno.ENOMEM:
        return None
    return f"alternate signal stack {stack.ss_sp:#x} ({stack.ss_size} bytes) is not mapped"


def disable_signal_stack() -> None:
    """Take this thread off its alternate signal stack (handlers then run on the thread's
    own stack), so one unmapped stack fails one test, not the rest of the run."""
    if _libc is not None:
        _libc.sigaltstack(ctypes.byref(_StackT(None, SS_DISABLE, 0)), None)
