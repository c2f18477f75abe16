"""The signal-stack check that tests/conftest.py runs after every test."""

from __future__ import annotations

import ctypes
import sys

import pytest

from tests.helpers.signal_stack import (
    SS_DISABLE,
    _StackT,
    disable_signal_stack,
    unmapped_signal_stack,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="sigaltstack + msync: Linux")

SIZE = 64 * 1024


def test_a_stack_that_is_unmapped_is_reported() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    old = _StackT()
    assert libc.sigaltstack(None, ctypes.byref(old)) == 0
    addr = libc.mmap(None, SIZE, 0x1 | 0x2, 0x02 | 0x20, -1, 0)  # RW, private | anonymous
    try:
        assert libc.sigaltstack(ctypes.byref(_StackT(addr, 0, SIZE)), None) == 0
        assert unmapped_signal_stack() is None
        assert libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(SIZE)) == 0
        assert unmapped_signal_stack() == (f"alternate signal stack {addr:#x} ({SIZE} bytes) "
                                           "is not mapped")
        disable_signal_stack()
        assert unmapped_signal_stack() is None
        now = _StackT()
        assert libc.sigaltstack(None, ctypes.byref(now)) == 0 and now.ss_flags & SS_DISABLE
    finally:  # the thread's own stack back (or none), whatever failed above
        libc.sigaltstack(ctypes.byref(old), None)
