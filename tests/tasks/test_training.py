"""The dense-task runs on the shared run layer (``fastvit detect|segment|hand train``):
for each task, a run stopped after its step-2 checkpoint (``--max-steps``, the command
called in this process) and continued with ``--resume auto`` starts from the checkpoint's
training state and ends bit-identical to an uninterrupted run -- the task's own model,
optimizer, schedule and data state. A real process sent SIGTERM mid-run (exit 75, then
``--resume auto`` in a new process) is tested once, on detection: the signal handling is
the shared run layer's (for classification too: tests/train/test_resume.py), and every
such process costs seconds of imports. Sharded hand evaluation counts every sample once,
and every torchrun call in the tests is ``--standalone``.

Monkeypatched here: ``fastvit.run.training.run_epochs`` (the shared epoch loop the one
run path calls), wrapped to read the state a resumed loop starts from.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastvit.cli import main as cli_main
from fastvit.run import training
from fastvit.run.recipes import to_dict
from fastvit.run.store import checkpoint_name
from fastvit.tasks.hand import engine as hand_engine
from fastvit.tasks.hand.recipe import DEFAULT_RECIPE as HAND_RECIPE
from fastvit.tasks.hand.recipe import HandRecipe
from fastvit.tasks.recipes import load_task_recipe
from tests.helpers.hand import make_freihand, write_mano_npz
from tests.helpers.tasks import make_ade, make_coco, torchrun
from tests.helpers.training import REPO, load_state, subprocess_env, tensors_equal

TESTS = Path(__file__).resolve().parent
HALF, FULL = 2, 4  # optimizer steps: 2 per epoch, 2 epochs; the "kill" comes after epoch 1


class _Stop(Exception):
    """Ends a run once the state its training loop starts from has been read."""


def _state_at_loop_start(train) -> dict:
    seen: dict = {}

    def spy(parts, loader, progress, *args, **kwargs):
        seen.update(model=copy.deepcopy(parts.raw_model.state_dict()),
                    optimizer=copy.deepcopy(parts.optimizer.state_dict()),
                    scheduler=copy.deepcopy(parts.scheduler.state_dict()),
                    scaler=copy.deepcopy(parts.scaler.state_dict()), start_step=progress.step)
        raise _Stop

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "run_epochs", spy)
        with pytest.raises(_Stop):
            train()
    return seen


def _sets(values: dict) -> list[str]:
    """``--set key=value`` for every recipe value (tuples as YAML lists)."""
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    return out


def _where(out: Path) -> list[str]:
    """The run folder and compute options every command here ends with."""
    return ["--out", str(out), "--device", "cpu", "--threads", "1"]


def _cli_train(argv: list[str]):
    """``train(out_dir, resume, max_steps)``: ``fastvit ARGV`` in this process, on one CPU
    thread like the SIGTERMed process (whose final state must equal these runs')."""

    def train(out: Path, resume: Path | str | None, max_steps: int | None = None) -> None:
        extra = ["--resume", str(resume)] if resume is not None else []
        extra += ["--max-steps", str(max_steps)] if max_steps is not None else []
        assert cli_main([*argv, *_where(out), *extra]) == 0

    return train


def _runs(root: Path, train) -> dict[str, Path]:
    """An uninterrupted FULL-step run, and a run stopped after its HALF-step checkpoint
    (``--max-steps``; a copy kept aside as ``half.pt``). ``train(out_dir, resume,
    max_steps)`` starts one run."""
    train(root / "full", None, None)
    train(root / "half", None, HALF)
    half = shutil.copy(root / "half" / checkpoint_name(HALF), root / "half.pt")
    return {"full": root / "full" / checkpoint_name(FULL), "half": Path(half)}


def _assert_resumed_state(seen: dict, checkpoint: Path) -> None:
    state = load_state(checkpoint)
    assert state["step"] == HALF and seen["start_step"] == HALF
    for key in ("model", "optimizer", "scheduler", "scaler"):
        diffs = tensors_equal(seen[key], state[key], key)
        assert not diffs, ("the resumed loop does not start from the checkpoint: "
                           f"{[d[:200] for d in diffs[:5]]}")


def _resume_to_the_end(train, runs: dict[str, Path], root: Path, caplog) -> None:
    """``--resume auto`` the stopped run: it says it resumed (a run started afresh would
    end bit-identical too) and ends as the uninterrupted one."""
    with caplog.at_level(logging.INFO, logger="fastvit"):
        train(root / "half", "auto")
    assert f"resumed {root / 'half' / checkpoint_name(HALF)}" in caplog.text
    _assert_same_final_state(root / "half" / checkpoint_name(FULL), runs["full"])


def _assert_same_final_state(resumed: Path, full: Path) -> None:
    a, b = load_state(resumed), load_state(full)
    assert a["step"] == b["step"] == FULL
    for key in ("model", "optimizer", "scheduler"):
        diffs = tensors_equal(a[key], b[key], key)
        assert not diffs, ("resumed run differs from the uninterrupted one at "
                           f"{[d[:200] for d in diffs[:5]]}")


# -- detection ------------------------------------------------------------------------------

DET = {"model.variant": "fastvit_t8", "data.min_size": 64, "data.max_size": 64,
       "data.batch_size": 2, "data.workers": 0, "head.fpn_channels": 64, "head.box_dim": 256,
       "head.mask_channels": 64, "head.rois_per_image": 64, "head.rpn_proposals_train": 256,
       "head.rpn_proposals_test": 100, "schedule.warmup_iters": 2, "run.log_every": 1,
       "optim.lr": 1e-3, "schedule.epochs": 2, "schedule.lr_steps": (1,)}


def _det_argv(root: Path) -> list[str]:
    return ["detect", "train", "--train-images", str(root / "train"), "--train-ann",
            str(root / "annotations" / "instances_train.json"), "--no-val", *_sets(DET)]


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    root = tmp_path_factory.mktemp("det_resume")
    make_coco(root, "train", n_images=4, size=64, seed=5)  # 2 steps per epoch
    train = _cli_train(_det_argv(root))
    return train, _runs(root, train), root


# -- hand ---------------------------------------------------------------------------------

HAND = {"model.variant": "fastvit_t8", "data.image_size": 64, "data.batch_size": 2,
        "schedule.epochs": 2, "data.workers": 0, "head.hidden": 64, "data.versions": (0,),
        "schedule.warmup_iters": 2, "run.log_every": 1}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_resume")
    mano = write_mano_npz(root / "mano_right.npz")
    data = make_freihand(root / "FreiHAND", mano, num_samples=4, versions=1, image_size=64)
    train = _cli_train(["hand", "train", "--data", str(data), "--mano", str(mano),
                        "--val-split", "none", *_sets(HAND)])
    return train, _runs(root, train), root


# -- segmentation -----------------------------------------------------------------------

SEG = {"model.variant": "fastvit_t8", "model.num_classes": 3, "data.batch_size": 2,
       "data.crop_size": 64, "data.base_size": 64, "head.fpn_channels": 64,
       "head.channels": 32, "data.workers": 0, "run.log_every": 1, "schedule.iters": FULL}


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_resume")
    data = make_ade(root / "ade", "training", n_images=4, size=64)  # 2 steps per epoch
    train = _cli_train(["segment", "train", "--data", str(data), "--no-val", *_sets(SEG)])
    return train, _runs(root, train), root


# -- each task stopped in process (--max-steps) and resumed --------------------------------

TASK_RUNS = ("det", "hand", "seg")  # the module fixtures above


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_RUNS)
def test_resume_starts_from_the_checkpoint_state(task, request):
    train, runs, root = request.getfixturevalue(task)
    seen = _state_at_loop_start(lambda: train(root / "probe", runs["half"], None))
    _assert_resumed_state(seen, runs["half"])


@pytest.mark.parametrize("task", TASK_RUNS)
def test_resume_is_bit_identical(task, request, caplog):
    _resume_to_the_end(*request.getfixturevalue(task), caplog)


# -- a real process stopped by SIGTERM mid-run, then resumed ---------------------------------


def _stop_with_sigterm_then_resume(argv: list[str], out: Path, reference: Path) -> None:
    """Start ``fastvit ARGV --out OUT``; once it wrote the checkpoint of step 2 (the end of
    its first epoch), SIGTERM its process group, so it usually stops mid-epoch after step
    3 (or after step 2 or 4 on a busy machine: all three resume exactly); expect
    exit 75 and a checkpoint of the step it stopped after; resume with ``--resume auto``
    and compare the final state with the uninterrupted ``reference`` run."""
    cmd = [sys.executable, "-m", "fastvit", *argv, *_where(out)]
    proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    epoch_end = out / checkpoint_name(2)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not epoch_end.exists():
        time.sleep(0.002)
    time.sleep(0.05)  # past the epoch end's bookkeeping, into step 3
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 75, f"exit {proc.returncode}:\n{stderr[-3000:]}"
    match = re.search(r"stopped by SIGTERM after step (\d+); checkpoint (\S+); continue with "
                      r"the same command and --resume auto", stderr)
    assert match, stderr[-3000:]
    step = int(match.group(1))
    print(f"stopped after step {step}")
    assert 2 <= step <= FULL and Path(match.group(2)) == out / checkpoint_name(step)
    assert load_state(out / checkpoint_name(step))["step"] == step

    resumed = subprocess.run([*cmd, "--resume", "auto"], env=subprocess_env(), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {out / checkpoint_name(step)}" in resumed.stdout + resumed.stderr
    _assert_same_final_state(out / checkpoint_name(FULL), reference)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_detection_sigterm_then_resume_is_bit_identical(det):
    _, runs, root = det
    _stop_with_sigterm_then_resume(_det_argv(root), root / "sigterm", runs["full"])


# -- hand: sharded evaluation of an odd number of samples ----------------------------------


@pytest.mark.slow
def test_hand_torchrun_evaluate_odd_sample_count_equals_single_process(tmp_path, capsys):
    """5 evaluation samples on 2 ranks (shards 3 + 2): a padded or truncated sampler
    would count 6 or 4."""
    mano = write_mano_npz(tmp_path / "mano_right.npz")
    data = make_freihand(tmp_path / "FreiHAND", mano, num_samples=2, versions=1,
                         image_size=64, eval_samples=5)
    recipe = load_task_recipe(HandRecipe, HAND_RECIPE, values={**HAND, "head.hidden": 32})
    torch.manual_seed(3)
    checkpoint = tmp_path / "checkpoint.pt"  # the layout of earlier releases, still read
    torch.save({"task": "hand", "recipe": to_dict(recipe), "step": 0, "extra": {},
                "model": hand_engine.build_net(recipe).state_dict()}, checkpoint)
    args = ["hand", "evaluate", "--checkpoint", str(checkpoint), "--data", str(data),
            "--mano", str(mano), "--split", "evaluation", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--num-examples", "0"]
    assert cli_main([*args, "--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    proc = torchrun([*args, "--out", str(tmp_path / "ddp")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())["metrics"]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["metrics"]
    assert single["num_samples"] == ddp["num_samples"] == 5
    assert set(single) == set(ddp)
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


# -- every torchrun call in the tests picks its own free port -------------------------------


def test_every_torchrun_call_in_the_tests_is_standalone():
    """``--standalone`` lets torchrun pick a free rendezvous port; a fixed
    ``--master_port`` collides when two test runs share a machine."""
    offenders = []
    for path in sorted(TESTS.parent.rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text()
        if re.search(r"(?i)master[_-]port\W{0,4}\d", text):  # a port number written down
            offenders.append(f"{path.name}: fixed master port")
        for match in re.finditer(r"[\"']torch\.distributed\.run[\"']", text):
            call = text[match.start():match.start() + 400]
            if "--standalone" not in call:
                line = text.count("\n", 0, match.start()) + 1
                offenders.append(f"{path.name}:{line}: torchrun without --standalone")
    assert not offenders, offenders
