"""The dense-task runs on the shared run layer (``fastvit detect|segment|hand``):
a run stopped after a checkpoint and resumed restores the training state and ends
bit-identical to an uninterrupted run -- stopped in process (``--max-steps``) and as a
real ``fastvit ... train`` process sent SIGTERM mid-run (exit 75, then ``--resume
auto``); sharded hand evaluation counts every sample once, and every torchrun call in
the tests is ``--standalone``.

Monkeypatched here: ``fastvit.run.training.run_epochs`` (the shared epoch loop the one
run path calls), wrapped to read the state a resumed loop starts from.
"""

from __future__ import annotations

import copy
import json
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
from fastvit.run.device import cpu_threads
from fastvit.run.recipes import to_dict
from fastvit.run.store import checkpoint_name
from fastvit.tasks.detection import engine as det_engine
from fastvit.tasks.detection.recipe import DEFAULT_RECIPE as DET_RECIPE
from fastvit.tasks.detection.recipe import DetectionRecipe
from fastvit.tasks.hand import engine as hand_engine
from fastvit.tasks.hand.recipe import DEFAULT_RECIPE as HAND_RECIPE
from fastvit.tasks.hand.recipe import HandRecipe
from fastvit.tasks.recipes import load_task_recipe
from fastvit.tasks.segmentation import engine as seg_engine
from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE as SEG_RECIPE
from fastvit.tasks.segmentation.recipe import SegmentationRecipe
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


def _runs(root: Path, train) -> dict[str, Path]:
    """An uninterrupted FULL-step run, and a run stopped after its HALF-step checkpoint
    (``--max-steps``; a copy kept aside as ``half.pt``). ``train(out_dir, resume,
    max_steps)`` starts one run."""
    with cpu_threads(1):
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


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    root = tmp_path_factory.mktemp("det_resume")
    images, ann = make_coco(root, "train", n_images=4, size=64, seed=5)  # 2 steps per epoch

    def train(out: Path, resume: Path | str | None, max_steps: int | None = None):
        recipe = load_task_recipe(DetectionRecipe, DET_RECIPE, values=DET)
        return det_engine.train(recipe, train_images=images, train_ann=ann, out_dir=out,
                                device="cpu", resume=resume, max_steps=max_steps)

    return train, _runs(root, train), root


@pytest.mark.slow
def test_detection_resume_starts_from_the_checkpoint_state(det):
    train, runs, root = det
    with cpu_threads(1):
        seen = _state_at_loop_start(lambda: train(root / "probe", runs["half"], None))
    _assert_resumed_state(seen, runs["half"])


def test_detection_resume_is_bit_identical(det):
    train, runs, root = det
    with cpu_threads(1):
        train(root / "half", "auto")
    _assert_same_final_state(root / "half" / checkpoint_name(FULL), runs["full"])


# -- hand ---------------------------------------------------------------------------------

HAND = {"model.variant": "fastvit_t8", "data.image_size": 64, "data.batch_size": 2,
        "schedule.epochs": 2, "data.workers": 0, "head.hidden": 64, "data.versions": (0,),
        "schedule.warmup_iters": 2, "run.log_every": 1}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_resume")
    mano = write_mano_npz(root / "mano_right.npz")
    data = make_freihand(root / "FreiHAND", mano, num_samples=4, versions=1, image_size=64)

    def train(out: Path, resume: Path | str | None, max_steps: int | None = None):
        recipe = load_task_recipe(HandRecipe, HAND_RECIPE, values=HAND)
        return hand_engine.train(recipe, data=data, mano_path=mano, out_dir=out,
                                 device="cpu", resume=resume, eval_split=None,
                                 max_steps=max_steps)

    return train, _runs(root, train), root


@pytest.mark.slow
def test_hand_resume_starts_from_the_checkpoint_state(hand):
    train, runs, root = hand
    with cpu_threads(1):
        seen = _state_at_loop_start(lambda: train(root / "probe", runs["half"], None))
    _assert_resumed_state(seen, runs["half"])


def test_hand_resume_is_bit_identical(hand):
    train, runs, root = hand
    with cpu_threads(1):
        train(root / "half", "auto")
    _assert_same_final_state(root / "half" / checkpoint_name(FULL), runs["full"])


# -- a real process stopped by SIGTERM mid-run, then resumed ---------------------------------


def _sets(values: dict) -> list[str]:
    """``--set key=value`` for every recipe value (tuples as YAML lists)."""
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    return out


def _stop_with_sigterm_then_resume(argv: list[str], out: Path, reference: Path) -> None:
    """Start ``fastvit ARGV --out OUT``; once it wrote the checkpoint of step 2 (the end of
    its first epoch), SIGTERM its process group, so it usually stops mid-epoch after step
    3 (or after step 2 or 4 on a busy machine: all three resume exactly); expect
    exit 75 and a checkpoint of the step it stopped after; resume with ``--resume auto``
    and compare the final state with the uninterrupted ``reference`` run."""
    cmd = [sys.executable, "-m", "fastvit", *argv, "--out", str(out), "--device", "cpu",
           "--threads", "1"]
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
    images, ann = root / "train", root / "annotations" / "instances_train.json"
    _stop_with_sigterm_then_resume(["detect", "train", "--train-images", str(images),
                                    "--train-ann", str(ann), "--no-val", *_sets(DET)],
                                   root / "sigterm", runs["full"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hand_sigterm_then_resume_is_bit_identical(hand):
    _, runs, root = hand
    _stop_with_sigterm_then_resume(["hand", "train", "--data", str(root / "FreiHAND"),
                                    "--mano", str(root / "mano_right.npz"), "--val-split",
                                    "none", *_sets(HAND)], root / "sigterm", runs["full"])


SEG = {"model.variant": "fastvit_t8", "model.num_classes": 3, "data.batch_size": 2,
       "data.crop_size": 64, "data.base_size": 64, "head.fpn_channels": 64,
       "head.channels": 32, "data.workers": 0, "run.log_every": 1, "schedule.iters": FULL}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_segmentation_sigterm_then_resume_is_bit_identical(tmp_path):
    make_ade(tmp_path / "ade", "training", n_images=4, size=64)  # 2 steps per epoch
    recipe = load_task_recipe(SegmentationRecipe, SEG_RECIPE, values=SEG)
    with cpu_threads(1):
        seg_engine.train(recipe, data_root=tmp_path / "ade", out_dir=tmp_path / "full",
                         val_split=None, device="cpu")
    _stop_with_sigterm_then_resume(["segment", "train", "--data", str(tmp_path / "ade"),
                                    "--no-val", *_sets(SEG)], tmp_path / "sigterm",
                                   tmp_path / "full" / checkpoint_name(FULL))


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
