"""Acceptance: `fastvit train` on a folder of one's own images, with only the flags every
PyTorch user knows, trains exactly what was asked for and learns.

The folder holds scikit-learn's bundled handwritten digits written as PNG files with PIL
(ImageFolder layout, train/ and val/ from different digits)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from fastvit.cli import main
from fastvit.run.device import default_workers
from fastvit.run.store import list_checkpoints
from tests.helpers.digits import digit_images, split_indices, write_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = 10


def _folder(root: Path, train_per_class: int, val_per_class: int = 10) -> Path:
    images, labels = digit_images(28)
    write_image_folder(root / "train", images, labels, split_indices(labels, train_per_class, 0))
    write_image_folder(root / "val", images, labels,
                       split_indices(labels, val_per_class, 150))
    return root


def _train(capsys, *flags: str) -> tuple[int, str]:
    code = main(["train", *flags])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _evaluate(capsys, json_path: Path, *flags: str) -> dict:
    code = main(["evaluate", *flags, "--json", str(json_path)])
    captured = capsys.readouterr()
    assert code == 0, (captured.out + captured.err)[-3000:]
    return json.loads(json_path.read_text())


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_plain_flags_train_exactly_what_was_asked(tmp_path, capsys):
    data = _folder(tmp_path / "digits", train_per_class=60)
    out = tmp_path / "run"
    code, text = _train(capsys, "--data", str(data), "--model", "fastvit_t8", "--epochs", "5",
                        "--image-size", "32", "--batch-size", "20", "--out", str(out))
    assert code == 0, text[-3000:]
    # the header states the effective settings: 5 epochs of 600 // 20 steps, batch 20 alone
    assert "5 epoch(s) x 30 steps = 150 steps" in text
    assert "1 process(es) x batch 20 = global batch 20 (no accumulation)" in text
    assert f"{default_workers()} DataLoader worker(s)" in text  # what the machine has
    assert re.search(r"recipe small: 600 training images", text)
    epochs = re.findall(r"(?:^|\r)epoch (\d+)/(\d+) \(step (\d+)\)", text, flags=re.M)
    assert epochs == [(str(e), "5", str(30 * e)) for e in range(1, 6)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epoch"] == 5 and summary["step"] == 150
    state = torch.load(list_checkpoints(out)[-1][1], map_location="cpu", weights_only=True)
    assert state["metadata"]["global_batch"] == 20  # no hidden accumulation
    # held-out digits (never trained on): well above the 10% of chance
    assert summary["best_top1"] >= 60.0, summary["history"]
    # evaluate sees the images as training's validation did (32x32, not the variant's 256):
    # the same score, the fused deploy form allowed one image's difference
    report = _evaluate(capsys, tmp_path / "eval.json", "--checkpoint",
                       str(out / "best.safetensors"), "--data", str(data))
    assert report["image_size"] == 32 and report["sets"]["val"]["count"] == 100
    assert abs(report["sets"]["val"]["top1"] - summary["best_top1"]) <= 1.0 + 1e-6


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_one_epoch_and_batch_8_on_a_small_folder(tmp_path, capsys):
    data = _folder(tmp_path / "digits", train_per_class=4, val_per_class=2)
    code, text = _train(capsys, "--data", str(data), "--model", "fastvit_t8", "--epochs", "1",
                        "--image-size", "32", "--batch-size", "8", "--out",
                        str(tmp_path / "run"))
    assert code == 0, text[-3000:]
    assert "1 epoch(s) x 5 steps = 5 steps" in text
    assert re.search(r"(?:^|\r)epoch 1/1 \(step 5\)", text, flags=re.M)
    # the paper recipe, named explicitly: its 5 + 10 warmup/cooldown epochs are shortened
    code, text = _train(capsys, "--config", "fastvit_t8", "--data", str(data), "--epochs", "1",
                        "--image-size", "32", "--batch-size", "8", "--out",
                        str(tmp_path / "paper"))
    assert code == 0, text[-3000:]
    assert "shortened to warmup 0.167 + cooldown 0.333 epochs" in text
    assert "--config small (from scratch) or --config finetune" in text
    assert "global batch 8 (no accumulation)" in text and "lr 7.81e-06" in text


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_folder_with_only_train_gets_a_stated_held_out_split(tmp_path, capsys):
    import shutil

    data = _folder(tmp_path / "digits", train_per_class=5)
    shutil.rmtree(data / "val")
    code, text = _train(capsys, "--data", str(data), "--model", "fastvit_t8", "--epochs", "1",
                        "--image-size", "32", "--batch-size", "8", "--val-fraction", "0.2",
                        "--out", str(tmp_path / "run"))
    assert code == 0, text[-3000:]
    assert (f"40 train / 10 val images; val: 20% of each class of {data / 'train'}/ held out "
            f"(no val/ folder; stratified, seed 0)") in text
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train_images"] == 40 and summary["last_eval"]["model"]["count"] == 10
    # evaluate scores the same 10 held-out images later (the split travels with the
    # weights), or another fraction when asked; without a record it says what to pass
    best = tmp_path / "run" / "best.safetensors"
    report = _evaluate(capsys, tmp_path / "eval.json", "--checkpoint", str(best), "--data",
                       str(data))
    val = report["sets"]["val"]
    assert val["count"] == 10 and "20% of each class" in val["source"]
    assert val["top1"] == pytest.approx(summary["last_eval"]["model"]["top1"], abs=10.0 + 1e-6)
    report = _evaluate(capsys, tmp_path / "eval40.json", "--checkpoint", str(best), "--data",
                       str(data), "--val-fraction", "0.4")
    assert report["sets"]["val"]["count"] == 20
    from fastvit.checkpoints import read_checkpoint, save_checkpoint

    weights, meta = read_checkpoint(best)
    bare = save_checkpoint(weights, tmp_path / "bare.safetensors", variant="fastvit_t8")
    assert main(["evaluate", "--checkpoint", str(bare), "--data", str(data)]) == 2
    assert "records no held-out split of train/: pass --val-fraction F" in capsys.readouterr().err


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_pretrained_weights_on_a_small_folder_get_the_finetune_recipe(tmp_path, capsys):
    from fastvit.checkpoints import read_checkpoint, save_checkpoint
    from fastvit.factory import create_model

    data = _folder(tmp_path / "digits", train_per_class=4, val_per_class=2)
    imagenet = save_checkpoint(create_model("fastvit_t8"), tmp_path / "t8_in1k.safetensors")
    out = tmp_path / "ft"
    code, text = _train(capsys, "--data", str(data), "--model", "fastvit_t8", "--pretrained",
                        str(imagenet), "--epochs", "1", "--image-size", "32", "--batch-size",
                        "8", "--out", str(out))
    assert code == 0, text[-3000:]
    assert "recipe finetune: 40 training images" in text
    assert f"fastvit_t8 from {imagenet}, 10 classes" in text
    assert "RandAugment m5 n2, no mixup/CutMix" in text and "no EMA" in text
    assert "lr 1.56e-05 (lr_base 0.0005 x 8 / 256)" in text
    weights, meta = read_checkpoint(out / "best.safetensors")
    assert weights["head.fc.weight"].shape[0] == 10  # the 1000-class head was replaced
