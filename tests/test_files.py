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


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_nothing(tmp_path) -> None:
    import errno

    from fastvit.errors import FastVitError, OutputWriteError
    from fastvit.files import atomic_path, atomic_write_text

    target = tmp_path / "out" / "predictions.csv"
    with pytest.raises(OutputWriteError) as caught, atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(caught.value, FastVitError) and caught.value.errno == errno.ENOSPC
    assert str(caught.value) == (f"cannot write {target}: No space left on device; "
                                 f"nothing was written")
    assert list(target.parent.iterdir()) == []
    atomic_write_text(target, "kept\n")
    with pytest.raises(OutputWriteError, match="the previous file is untouched"), \
            atomic_path(target):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert target.read_text() == "kept\n" and len(list(target.parent.iterdir())) == 1
    with pytest.raises(ValueError), atomic_path(target):  # not a storage error: as it is
        raise ValueError("a bug")
