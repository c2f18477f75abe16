"""Acceptance: a 2-process gloo torchrun job trains and evaluates like one process, and
survives a dead worker and a preemption.

The uninterrupted reference run: rank 0 alone logs, and the distributed evaluation of its
last checkpoint (9 images: shards of 5 + 4, so a padded sampler would count one twice)
equals a single-process evaluation of the same weights. Then ``torchrun --max-restarts 1
... fastvit train --resume auto``: rank 1 is SIGKILLed after the first checkpoint,
torchrun restarts the group, which resumes from the newest checkpoint; then torchrun
itself gets SIGTERM (what a scheduler sends) and forwards it, and both workers stop after
the same step with a checkpoint; a last ``--resume auto`` finishes. The final state equals
the reference bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from fastvit.run.store import checkpoint_name, list_checkpoints
from tests.helpers.training import (
    REPO,
    cli_set_args,
    load_state,
    make_image_folder,
    subprocess_env,
    tensors_equal,
    tiny_config,
    tiny_overrides,
    torchrun_cmd,
    torchrun_workers,
)

FINAL = 12  # 48 images / (2 ranks x batch 4) = 6 steps per epoch, 2 epochs


def _args(out: Path, data: Path) -> list[str]:
    overrides = tiny_overrides(out, data, **{"run.device": "cpu", "run.save_every_steps": 2,
                                             "run.keep_last": 20})
    return ["train", "--config", "fastvit_t8", *cli_set_args(overrides)]


def _wait(condition, what: str, proc: subprocess.Popen, output: list[str],
          timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}:\n{''.join(output)[-4000:]}")
        time.sleep(0.01)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=400)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_restart_after_a_dead_worker_then_sigterm_then_resume_is_exact(tmp_path):
    data = make_image_folder(tmp_path / "data", num_classes=3, train_per_class=16)
    reference = _run(torchrun_cmd(_args(tmp_path / "reference", data)))
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert reference.stderr.count("epoch 2/2 (") == 1  # rank 0 logs, rank 1 does not
    check_distributed_evaluation(tmp_path / "reference", data)

    out = tmp_path / "elastic"
    proc = subprocess.Popen(torchrun_cmd([*_args(out, data), "--resume", "auto"], 2,
                                         "--max-restarts", "1"),
                            env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # -- a worker dies: rank 1 of the first attempt, after the first checkpoint ----------
        _wait(lambda: (out / checkpoint_name(2)).exists(), "the first checkpoint", proc, output)
        (victim,) = [w for w in torchrun_workers(proc.pid)
                     if (w.get("RANK"), w.get("TORCHELASTIC_RESTART_COUNT")) == ("1", "0")]
        os.kill(int(victim["pid"]), signal.SIGKILL)

        # -- torchrun restarts the group, which resumes from the newest checkpoint -----------
        def resumed_step() -> int | None:
            match = re.search(r"resumed \S+ckpt_step(\d+)\.pt", "".join(output))
            return int(match.group(1)) if match else None

        _wait(lambda: resumed_step() is not None, "the restarted group to resume", proc,
              output)
        restarted = {w.get("TORCHELASTIC_RESTART_COUNT") for w in torchrun_workers(proc.pid)}
        assert restarted == {"1"}, restarted
        start = resumed_step()
        assert start >= 2

        # -- preemption: SIGTERM to torchrun, which forwards it to every worker --------------
        _wait(lambda: list_checkpoints(out)[-1][0] > start, "a checkpoint after the restart",
              proc, output)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    text = "".join(output)
    assert proc.returncode != 0, text[-3000:]  # torchrun reports the signal (SignalException)
    match = re.search(r"fastvit train: stopped by SIGTERM after step (\d+); checkpoint (\S+);",
                      text)
    assert match, text[-4000:]
    stop = int(match.group(1))
    assert start < stop < FINAL
    state = load_state(out / checkpoint_name(stop))
    assert (state["step"], state["world_size"], len(state["rng"])) == (stop, 2, 2)

    # -- the job is started again and finishes ------------------------------------------------
    final = _run(torchrun_cmd([*_args(out, data), "--resume", "auto"]))
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-3000:]
    assert f"resumed {out / checkpoint_name(stop)}" in final.stdout + final.stderr

    ref = load_state(tmp_path / "reference" / checkpoint_name(FINAL))
    got = load_state(out / checkpoint_name(FINAL))
    for key in ("model", "ema", "ema_n_averaged", "optimizer", "scheduler", "step", "epoch",
                "batch_in_epoch", "metrics", "best_score"):
        diffs = tensors_equal(ref[key], got[key], key)
        assert not diffs, f"the restarted run differs from the uninterrupted one at {diffs[:5]}"


def check_distributed_evaluation(out: Path, data: Path) -> None:
    """The last evaluation the 2-process run logged equals one process evaluating its
    final weights (model and EMA), and the checkpoint and summary record it."""
    from fastvit.data import build_eval_loader
    from fastvit.evaluate import evaluate_classifier
    from fastvit.factory import create_model
    from fastvit.run.metrics_log import read_metrics
    from fastvit.train.data import build_datasets

    final = load_state(out / checkpoint_name(FINAL))
    logged = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert logged[-1]["step"] == FINAL
    _, val_ds, classes = build_datasets(tiny_config(out, data, **{"run.device": "cpu"}))
    loader = build_eval_loader(val_ds, batch_size=5)
    for name in ("model", "ema"):
        model = create_model("fastvit_t8", num_classes=len(classes))
        model.load_state_dict(final[name])
        single = evaluate_classifier(model, loader)
        distributed = logged[-1][name]
        assert distributed["count"] == single["count"] == len(val_ds) == 9
        assert distributed["top1"] == pytest.approx(single["top1"], abs=1e-9)
        assert distributed["top5"] == pytest.approx(single["top5"], abs=1e-9)
        assert distributed["loss"] == pytest.approx(single["loss"], rel=1e-5, abs=1e-6)
        assert final["metrics"][name] == distributed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == FINAL and not summary["stopped"]
    assert torch.isfinite(torch.tensor(summary["best_top1"]))
    assert Path(summary["curves"]).is_file()
