"""Acceptance: a run killed with SIGKILL mid-epoch and resumed ends bit-identical to an
uninterrupted run (CPU, deterministic kernels, one thread, data made here)."""

from __future__ import annotations

import os
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


@pytest.mark.timeout(600)
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    data = make_image_folder(tmp_path / "data", num_classes=3, train_per_class=12)

    reference = run_train(_args(tmp_path / "reference", data))
    assert reference.returncode == 0, reference.stderr[-3000:]

    # -- the run to kill: wait for the first step checkpoint, then SIGKILL -------------------
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fastvit", "train",
                             *_args(killed_dir, data)], env=subprocess_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = killed_dir / checkpoint_name(3)
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way:\n{stderr[-2000:]}"

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

    ref = load_state(tmp_path / "reference" / checkpoint_name(FINAL))
    got = load_state(killed_dir / checkpoint_name(FINAL))
    for key in ("model", "ema", "ema_n_averaged", "optimizer", "scheduler", "scaler", "step",
                "epoch", "batch_in_epoch", "metrics", "best_score"):
        diffs = tensors_equal(ref[key], got[key], key)
        assert not diffs, f"resumed run differs from the uninterrupted one at {diffs[:5]}"
    assert ref["step"] == FINAL and ref["epoch"] == EPOCHS
