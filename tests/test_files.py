"""Atomic writes: never a half-written file, and the permissions a plain ``open()`` gives."""

from __future__ import annotations

import os

import pytest

from fastvit.files import atomic_torch_save, atomic_write, atomic_write_text


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    before = os.umask(0o022)
    os.umask(before)
    yield set_mask
    os.umask(before)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    text, tensors = tmp_path / "a.txt", tmp_path / "b.pt"
    atomic_write_text(text, "x")
    atomic_torch_save({"w": 1}, tensors)  # torch.save writes into mkstemp's 0600 file
    assert text.stat().st_mode & 0o777 == mode
    assert tensors.stat().st_mode & 0o777 == mode


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "shared.json"
    atomic_write_text(path, "{}")
    os.chmod(path, 0o660)
    atomic_write_text(path, "{\"a\": 1}")
    assert path.stat().st_mode & 0o777 == 0o660 and path.read_text() == "{\"a\": 1}"


def test_a_failed_write_leaves_neither_file_nor_temp(tmp_path):
    path = tmp_path / "out.bin"

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert list(tmp_path.iterdir()) == []
