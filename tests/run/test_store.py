"""The run checkpoint store under faults: ``--resume auto`` skips unreadable files (naming
them, never deleting them), a failed or short write leaves every file on disk as it was
and no temp file, and ``keep_last`` rotation never leaves zero good checkpoints."""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastvit import files
from fastvit.errors import CheckpointError
from fastvit.run import store
from fastvit.run.store import (
    BEST_NAME,
    CheckpointWriteError,
    UnreadableCheckpointError,
    checkpoint_name,
    list_checkpoints,
    load_resumable,
    resume_candidates,
    save_best,
    save_checkpoint,
)
from tests.helpers.fit import TinyRun, run_tiny
from tests.helpers.training import REPO, load_state, subprocess_env


def _state(step: int, size: int = 4) -> dict:
    return {"format": store.RUN_FORMAT, "task": "tiny", "model": {"w": torch.full((size,), step,
                                                                                dtype=torch.float32)},
            "optimizer": {}, "scheduler": {}, "step": step, "epoch": 0, "batch_in_epoch": step,
            "config": {}}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- resume candidates and skipping ---------------------------------------------------------


def test_auto_tries_checkpoints_newest_first_then_best(tmp_path):
    assert resume_candidates("auto", tmp_path) == []  # nothing: a fresh start
    for step in (2, 4, 6):
        save_checkpoint(_state(step), tmp_path, step, keep_last=10)
    save_best(_state(4), tmp_path)
    expected = [tmp_path / checkpoint_name(s) for s in (6, 4, 2)] + [tmp_path / BEST_NAME]
    assert resume_candidates("auto", tmp_path) == expected
    assert resume_candidates(tmp_path, "elsewhere") == expected  # a folder given as --resume
    assert resume_candidates(expected[1], tmp_path) == [expected[1]]
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        resume_candidates(tmp_path / "nope.pt", tmp_path)


def test_truncated_newest_is_skipped_named_and_left_in_place(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(_state(step), tmp_path, step, keep_last=10)
    newest = tmp_path / checkpoint_name(6)
    _truncate(newest)
    before = _sha(newest)
    messages: list[str] = []
    state, path = load_resumable(resume_candidates("auto", tmp_path), "tiny", messages.append)
    assert (path, state["step"]) == (tmp_path / checkpoint_name(4), 4)
    assert len(messages) == 1 and str(newest) in messages[0], messages
    assert "left in place" in messages[0] and checkpoint_name(4) in messages[0]
    assert newest.is_file() and _sha(newest) == before


def test_best_is_the_last_resort(tmp_path):
    save_checkpoint(_state(6), tmp_path, 6, keep_last=10)
    save_best(_state(4), tmp_path)
    _truncate(tmp_path / checkpoint_name(6))
    messages: list[str] = []
    state, path = load_resumable(resume_candidates("auto", tmp_path), "tiny", messages.append)
    assert (path.name, state["step"]) == (BEST_NAME, 4)
    assert "no ckpt_step*.pt checkpoint is readable" in messages[-1]


def test_nothing_readable_is_an_error_that_deletes_nothing(tmp_path):
    for step in (2, 4):
        save_checkpoint(_state(step), tmp_path, step, keep_last=10)
        _truncate(tmp_path / checkpoint_name(step))
    with pytest.raises(CheckpointError, match="no readable checkpoint") as caught:
        load_resumable(resume_candidates("auto", tmp_path), "tiny", lambda _m: None)
    assert checkpoint_name(2) in str(caught.value) and checkpoint_name(4) in str(caught.value)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    # an unreadable file named explicitly is not skipped
    with pytest.raises(UnreadableCheckpointError):
        load_resumable([tmp_path / checkpoint_name(4)], "tiny", lambda _m: None)


def test_fit_resume_auto_skips_a_truncated_newest_checkpoint(tmp_path):
    """Through the run layer: the resumed run names the skipped file and ends where an
    uninterrupted run ends."""
    run_tiny(TinyRun(tmp_path / "ref"))
    run_tiny(TinyRun(tmp_path / "cut", save_every=2, max_steps=5))
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [2, 4, 5]
    _truncate(tmp_path / "cut" / checkpoint_name(5))
    messages: list[str] = []
    run_tiny(TinyRun(tmp_path / "cut", save_every=2, resume="auto"), say=messages.append)
    assert any(f"skipping {tmp_path / 'cut' / checkpoint_name(5)}" in m for m in messages)
    ref, got = (load_state(tmp_path / d / checkpoint_name(12)) for d in ("ref", "cut"))
    assert torch.equal(ref["model"]["0.weight"], got["model"]["0.weight"])
    assert ref["optimizer"]["state"][0]["exp_avg"].equal(got["optimizer"]["state"][0]["exp_avg"])


# -- failed writes ----------------------------------------------------------------------------


def _failing_save(after_bytes: int, error: OSError):
    """A ``torch.save`` replacement that writes ``after_bytes`` then fails like a full disk."""
    def save(obj, fh):
        fh.write(b"P" * after_bytes)
        raise error
    return save


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   OSError(errno.EIO, "Input/output error")],
                         ids=["ENOSPC", "EIO"])
def test_failed_write_keeps_every_file_and_leaves_no_temp(tmp_path, monkeypatch, error):
    for step in (2, 4):
        save_checkpoint(_state(step), tmp_path, step, keep_last=2)
    save_best(_state(4), tmp_path)
    digests = {p.name: _sha(p) for p in tmp_path.iterdir()}
    monkeypatch.setattr(files.torch, "save", _failing_save(1000, error))
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(_state(6), tmp_path, 6, keep_last=2)
    message = str(caught.value)
    assert checkpoint_name(6) in message and error.strerror in message
    assert f"newest checkpoint, {tmp_path / checkpoint_name(4)}, is untouched" in message
    assert "--resume auto" in message
    with pytest.raises(CheckpointWriteError):
        save_best(_state(6), tmp_path)
    monkeypatch.undo()
    assert {p.name: _sha(p) for p in tmp_path.iterdir()} == digests  # rotation did not run
    assert _leftovers(tmp_path) == []
    assert load_state(tmp_path / checkpoint_name(2))["step"] == 2


def test_a_write_that_does_not_read_back_replaces_nothing(tmp_path, monkeypatch):
    """A short write that reports success: the temp file is checked before the rename."""
    save_best(_state(2), tmp_path)
    before = _sha(tmp_path / BEST_NAME)
    real_save = torch.save

    def short_save(obj, fh):
        real_save(obj, fh)
        fh.fh.truncate(fh.fh.tell() // 2)

    monkeypatch.setattr(files.torch, "save", short_save)
    with pytest.raises(CheckpointWriteError, match="does not read back"):
        save_best(_state(4), tmp_path)
    assert _sha(tmp_path / BEST_NAME) == before and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_file_size_limit_in_a_child_process(tmp_path):
    """A real failing write: the child's RLIMIT_FSIZE lets the small first checkpoint
    through and stops the big second one half-way (EFBIG, as a full disk would)."""
    code = textwrap.dedent(f"""
        import torch
        from fastvit.run.store import CheckpointWriteError, save_checkpoint
        from tests.run.test_store import _state
        save_checkpoint(_state(1), {str(tmp_path)!r}, 1, keep_last=1)
        try:
            save_checkpoint(_state(2, size=200_000), {str(tmp_path)!r}, 2, keep_last=1)
        except CheckpointWriteError as err:
            print(err)
    """)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "File too large" in proc.stdout and checkpoint_name(2) in proc.stdout
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert load_state(tmp_path / checkpoint_name(1))["step"] == 1
    assert _leftovers(tmp_path) == []


def test_fit_stops_with_one_message_when_a_save_fails(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def save(obj, fh):
        calls.append(1)
        if len(calls) == 3:  # the third checkpoint (step 6) hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, fh)

    monkeypatch.setattr(files.torch, "save", save)
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        run_tiny(TinyRun(tmp_path, save_every=2, evaluate=False))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert _leftovers(tmp_path) == []
    run_tiny(TinyRun(tmp_path, save_every=2, evaluate=False, resume="auto"))  # space is back
    assert load_state(tmp_path / checkpoint_name(12))["step"] == 12


def test_a_failed_export_of_the_best_weights_is_one_clear_error(tmp_path):
    def export(state):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointWriteError, match="cannot export the best weights: .*No "
                       "space left on device.*best.pt is written"):
        run_tiny(TinyRun(tmp_path, on_best=export))
    assert load_state(tmp_path / BEST_NAME)["step"] == 6


# -- rotation ----------------------------------------------------------------------------------


def test_rotation_keeps_the_newest_and_ignores_later_leftovers(tmp_path):
    """After a resume from step 4 past an unreadable step-6 file, saving step 5 with
    keep_last=1 must keep step 5 (not count the stale step 6 as "the newest")."""
    for step in (2, 4, 6):
        save_checkpoint(_state(step), tmp_path, step, keep_last=10)
    _truncate(tmp_path / checkpoint_name(6))
    save_checkpoint(_state(5), tmp_path, 5, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 6]
    save_checkpoint(_state(6), tmp_path, 6, keep_last=1)  # the resumed run reaches step 6
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6]
    assert load_state(tmp_path / checkpoint_name(6))["step"] == 6
    assert os.listdir(tmp_path) == [checkpoint_name(6)]
