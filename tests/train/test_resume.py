"""Acceptance: a run killed with SIGKILL mid-epoch, or stopped by SIGTERM (exit 75, with a
checkpoint of the step), and resumed ends bit-identical to an uninterrupted run, also
when the newest checkpoint is then truncated (CPU, deterministic kernels, one thread,
data made here)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastvit.run.store import checkpoint_name, list_checkpoints
from tests.helpers.training import (
    REPO,
    cli_set_args,
    load_state,
    make_image_folder,
    run_train,
    subprocess_env,
    tensors_equal,
    tiny_overrides,
)

STEPS_PER_EPOCH, EPOCHS = 9, 2  # 36 images / batch 4
FINAL = STEPS_PER_EPOCH * EPOCHS


def _args(out: Path, data: Path) -> list[str]:
    # one DataLoader worker: augmentation runs in another process, seeded per sample
    overrides = tiny_overrides(out, data, **{"run.save_every_steps": 3, "data.workers": 1,
                                             "run.keep_last": 10})
    return ["--config", "fastvit_t8", *cli_set_args(overrides)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The data and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("resume")
    data = make_image_folder(root / "data", num_classes=3, train_per_class=12)
    reference = run_train(_args(root / "reference", data))
    assert reference.returncode == 0, reference.stderr[-3000:]
    return data, root / "reference"


def _signal_after_checkpoint(out: Path, data: Path, sig: int, step: int = 3,
                             group: bool = False) -> tuple[int, str, str]:
    """Start a run, send ``sig`` once its checkpoint of ``step`` exists (``group``: to its
    whole process group, DataLoader worker included, as a terminal or torchrun does);
    returns (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fastvit", "train", *_args(out, data)],
                            env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=group)
    first = out / checkpoint_name(step)
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        (os.killpg if group else os.kill)(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def _assert_same_final_state(reference: Path, out: Path) -> None:
    ref = load_state(reference / checkpoint_name(FINAL))
    got = load_state(out / checkpoint_name(FINAL))
    for key in ("model", "ema", "ema_n_averaged", "optimizer", "scheduler", "scaler", "step",
                "epoch", "batch_in_epoch", "metrics", "best_score"):
        diffs = tensors_equal(ref[key], got[key], key)
        assert not diffs, f"resumed run differs from the uninterrupted one at {diffs[:5]}"
    assert ref["step"] == FINAL and ref["epoch"] == EPOCHS


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, runs):
    data, reference = runs
    # -- the run to kill: wait for the first step checkpoint, then SIGKILL -------------------
    killed_dir = tmp_path / "killed"
    code, _, stderr = _signal_after_checkpoint(killed_dir, data, signal.SIGKILL)
    assert code == -signal.SIGKILL, f"the run was not killed mid-way:\n{stderr[-2000:]}"

    saved = list_checkpoints(killed_dir)
    assert saved, "no checkpoint survived the kill"
    assert not (killed_dir / checkpoint_name(FINAL)).exists()
    # The kill lands some time after step 3's checkpoint appeared (polling, a busy machine):
    # possibly after an epoch-end checkpoint (step 9 rewritten with batch_in_epoch 0). All
    # checkpoints are kept (keep_last), so resume from the newest mid-epoch one: with
    # --resume auto when that is the newest (the usual case), else by its path.
    mid_epoch = [(step, path) for step, path in saved
                 if load_state(path)["batch_in_epoch"] > 0]
    assert mid_epoch, f"no mid-epoch checkpoint among {[s for s, _ in saved]}"
    step, path = mid_epoch[-1]
    assert step < FINAL
    resume = "auto" if path == saved[-1][1] else str(path)

    resumed = run_train([*_args(killed_dir, data), "--resume", resume])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {path}" in resumed.stderr  # the library logs; the CLI shows it on stderr
    _assert_same_final_state(reference, killed_dir)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_sigterm_mid_epoch_exits_75_and_resume_past_a_truncated_checkpoint_is_exact(
        tmp_path, runs):
    """SIGTERM (what a scheduler sends before preempting), to the whole process group: the
    step in progress finishes, its checkpoint is written, the exit code is 75 with a
    message saying how to continue; the DataLoader worker, signalled too, survives.
    Then the newest checkpoint is truncated (a copy cut short): ``--resume auto`` names
    it, leaves it, resumes from the one before, and still ends bit-identical."""
    data, reference = runs
    out = tmp_path / "stopped"
    code, _, stderr = _signal_after_checkpoint(out, data, signal.SIGTERM, step=6, group=True)
    assert code == 75, f"not stopped by the signal (exit {code}):\n{stderr[-3000:]}"
    match = re.search(r"fastvit train: stopped by SIGTERM after step (\d+); checkpoint (\S+); "
                      r"continue with the same command and --resume auto", stderr)
    assert match, stderr[-3000:]
    step, stop_file = int(match.group(1)), Path(match.group(2))
    assert 6 <= step < FINAL and stop_file == out / checkpoint_name(step)
    saved = list_checkpoints(out)
    assert saved[-1] == (step, stop_file)
    assert load_state(stop_file)["step"] == step
    assert not list(out.glob(".*.tmp"))

    stop_file.write_bytes(stop_file.read_bytes()[:1000])  # truncated
    previous = saved[-2][1]
    resumed = run_train([*_args(out, data), "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logged = resumed.stderr  # the library logs; the CLI shows it on stderr
    assert f"warning: --resume: skipping {stop_file}: " in logged, logged[-2000:]
    assert f"resumed {previous}" in logged
    _assert_same_final_state(reference, out)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_disk_full_mid_run_stops_with_one_line_and_keeps_the_checkpoints(tmp_path, runs):
    """The run's file size limit drops to 1 MB after its first checkpoint (prlimit on the
    live process: EFBIG, as a full disk gives ENOSPC): the next save fails, the run stops
    with exit 2 and one line, the earlier checkpoints load and no temp file is left."""
    data, _ = runs
    out = tmp_path / "full_disk"
    proc = subprocess.Popen([sys.executable, "-m", "fastvit", "train", *_args(out, data)],
                            env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / checkpoint_name(3)).exists() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    print(last)
    assert re.fullmatch(r"fastvit train: error: cannot write checkpoint \S+ckpt_step\d+\.pt: "
                        r"\[Errno 27\] File too large; the newest checkpoint, \S+, is untouched "
                        r"and no temporary file is left\. Free space \(or fix the folder\), then "
                        r"continue with --resume auto", last), last
    saved = list_checkpoints(out)
    assert saved and saved[0][0] == 3
    for step, path in saved:
        assert load_state(path)["step"] == step
    assert not list(out.glob(".*.tmp"))
