"""Semantic FPN + FastViT: ADE20K-layout data, confusion-matrix metrics, inference
modes, training to a stated mIoU, CLI, bad input.

Synthetic ADE20K-layout sets (tests/_task_utils.py): raw labels 1 (background),
2 (red rectangle), 3 (green disc) and a 0 ("other", ignored) corner patch.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastvit.cli import main as cli_main
from fastvit.errors import ConfigError, DataError
from fastvit.run.distributed import DistEnv
from fastvit.run.recipes import to_dict
from fastvit.run.store import checkpoint_name, load_run_checkpoint
from fastvit.tasks.recipes import load_task_recipe
from fastvit.tasks.segmentation import engine
from fastvit.tasks.segmentation.data import (
    IGNORE_INDEX,
    ADE20KSegmentation,
    EvalTransform,
    train_transforms,
)
from fastvit.tasks.segmentation.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    metrics_from_confusion,
)
from fastvit.tasks.segmentation.model import build_semantic_fpn
from fastvit.tasks.segmentation.predict import predict_label_maps
from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE, SegmentationRecipe
from tests.helpers.tasks import make_ade, torchrun

ROOT = Path(__file__).resolve().parents[2]
#: small head and 64x64 crops for CPU speed; everything else is the real recipe
TINY = {"model.variant": "fastvit_t8", "model.num_classes": 3, "data.batch_size": 4,
        "data.crop_size": 64, "data.base_size": 64, "head.fpn_channels": 64,
        "head.channels": 32, "data.workers": 0, "run.log_every": 5}


def tiny_recipe(changes: dict | None = None) -> SegmentationRecipe:
    """The packaged recipe with the TINY changes (and ``changes``, dotted keys)."""
    return load_task_recipe(SegmentationRecipe, DEFAULT_RECIPE,
                            values={**TINY, **(changes or {})})


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ade")
    make_ade(root, "training", n_images=4, size=64)
    make_ade(root, "validation", n_images=3, size=64, seed=1)
    return root


# ---------------------------------------------------------------------------
# Metrics on hand-computed cases
# ---------------------------------------------------------------------------


def test_metrics_on_known_confusion() -> None:
    # rows: ground truth, columns: prediction; class 2 never occurs
    conf = torch.tensor([[5, 1, 0],
                         [2, 4, 0],
                         [0, 0, 0]])
    m = metrics_from_confusion(conf)
    assert m["IoU"][0] == pytest.approx(5 / (6 + 7 - 5))
    assert m["IoU"][1] == pytest.approx(4 / (6 + 5 - 4))
    assert math.isnan(m["IoU"][2])  # absent class: left out of the mean
    assert m["mIoU"] == pytest.approx((5 / 8 + 4 / 7) / 2)
    assert m["aAcc"] == pytest.approx(9 / 12)
    assert m["mAcc"] == pytest.approx((5 / 6 + 4 / 6) / 2)


def test_confusion_matrix_ignores_ignore_index() -> None:
    target = torch.tensor([[0, 0, 1, 255], [2, 1, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 0, 1]])
    conf = confusion_matrix(pred, target, 3)
    expected = torch.tensor([[1, 1, 0],
                             [1, 1, 0],
                             [0, 0, 1]])
    assert torch.equal(conf, expected)
    acc = ConfusionMatrix(3)
    acc.update(pred, target)
    acc.update(pred, target)
    assert torch.equal(acc.matrix, 2 * expected)
    assert acc.compute()["aAcc"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="target labels"):
        confusion_matrix(pred, torch.full_like(target, 7), 3)


def test_perfect_prediction_scores_one() -> None:
    target = torch.randint(0, 4, (2, 16, 16))
    target[0, :3] = IGNORE_INDEX
    pred = target.clone()
    pred[target == IGNORE_INDEX] = 1  # whatever is predicted on ignored pixels
    m = metrics_from_confusion(confusion_matrix(pred, target, 4))
    assert m["mIoU"] == 1.0 and m["aAcc"] == 1.0 and m["mAcc"] == 1.0


# ---------------------------------------------------------------------------
# Inference modes
# ---------------------------------------------------------------------------


class _Pointwise(nn.Module):
    """A per-pixel model: sliding windows must reproduce whole-image logits exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0
        self.calls.append(tuple(x.shape[-2:]))
        return self.conv(x)


def test_sliding_window_equals_whole_for_pointwise_model() -> None:
    model = _Pointwise()
    image = torch.randn(1, 3, 100, 150)
    whole = engine.infer_logits(model, image, "whole")
    assert whole.shape == (1, 5, 100, 150) and model.calls == [(128, 160)]
    model.calls.clear()
    slide = engine.infer_logits(model, image, "slide", window=64, stride=43)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-6)
    # rows: ceil((100 - 64) / 43) + 1 = 2, columns: ceil((150 - 64) / 43) + 1 = 3
    assert model.calls == [(64, 64)] * 6
    small = engine.infer_logits(model, torch.randn(1, 3, 40, 50), "slide", window=64, stride=43)
    assert small.shape == (1, 5, 40, 50)


def test_semantic_fpn_shapes() -> None:
    model = build_semantic_fpn("fastvit_t8", 7, fpn_channels=32, head_channels=16).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 64))
    assert out.shape == (2, 7, 96, 64)
    # per level: stride 4 -> 1 conv, 8 -> 1, 16 -> 2, 32 -> 3 conv blocks
    convs = [sum(isinstance(m, nn.Conv2d) for m in h.modules()) for h in model.head.scale_heads]
    assert convs == [1, 1, 2, 3]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def test_label_mapping_and_transforms(ade: Path) -> None:
    raw = np.array(Image.open(ade / "annotations" / "training" / "ADE_training_00000.png"))
    plain = ADE20KSegmentation(ade, "training", num_classes=3)
    image, label = plain[0]
    assert image.shape == (3, 64, 64) and label.shape == (64, 64)
    expected = torch.from_numpy(raw.astype(np.int64)) - 1
    expected[expected < 0] = IGNORE_INDEX
    assert torch.equal(label, expected)
    assert set(label.unique().tolist()) == {0, 1, 2, IGNORE_INDEX}

    train = ADE20KSegmentation(ade, "training", 3, train_transforms(64, 64, (0.5, 2.0)))
    for i in range(4):
        image, label = train[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert label.shape == (64, 64) and label.dtype == torch.int64
        assert set(label.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}

    ev = ADE20KSegmentation(ade, "training", 3, EvalTransform(32))
    image, label = ev[0]
    assert image.shape == (3, 32, 32) and label.shape == (64, 64)


def test_label_out_of_range(tmp_path: Path) -> None:
    make_ade(tmp_path, "training", n_images=2, size=32)
    bad = tmp_path / "annotations" / "training" / "ADE_training_00001.png"
    arr = np.array(Image.open(bad))
    arr[0, 0] = 200
    Image.fromarray(arr).save(bad)
    dataset = ADE20KSegmentation(tmp_path, "training", num_classes=150)
    dataset[0]
    with pytest.raises(DataError, match=r"ADE_training_00001\.png has label 200, outside "
                                        r"0\.\.150"):
        dataset[1]


def test_missing_annotation_file(tmp_path: Path) -> None:
    make_ade(tmp_path, "training", n_images=2, size=32)
    (tmp_path / "annotations" / "training" / "ADE_training_00000.png").unlink()
    with pytest.raises(DataError, match=r"annotation file not found: .*ADE_training_00000\.png"):
        ADE20KSegmentation(tmp_path, "training", 3)


def test_image_absent_for_annotation(tmp_path: Path) -> None:
    make_ade(tmp_path, "training", n_images=2, size=32)
    (tmp_path / "images" / "training" / "ADE_training_00001.jpg").unlink()
    with pytest.raises(DataError, match=r"image for annotation .*ADE_training_00001\.png "
                                        r"not found"):
        ADE20KSegmentation(tmp_path, "training", 3)


def test_missing_split_folder(tmp_path: Path) -> None:
    make_ade(tmp_path, "training", n_images=1, size=32)
    with pytest.raises(DataError, match=r"folder not found: .*images/validation"):
        ADE20KSegmentation(tmp_path, "validation", 3)


def test_bad_label_from_a_worker_is_one_line(tmp_path: Path, capsys) -> None:
    """The out-of-range label surfaces through a DataLoader worker: the CLI still
    prints one line naming the file and exits 2."""
    make_ade(tmp_path, "training", n_images=2, size=64)
    for path in (tmp_path / "annotations" / "training").glob("*.png"):
        arr = np.array(Image.open(path))
        arr[0, 0] = 9
        Image.fromarray(arr).save(path)
    rc = cli_main(["segment", "train", "--data", str(tmp_path), "--no-val", "--out",
                   str(tmp_path / "run"), "--model", "fastvit_t8", "--num-classes", "3",
                   "--iters", "1", "--batch-size", "2", "--crop-size", "64", "--workers", "1",
                   "--set", "data.base_size=64", "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fastvit segment:")]
    assert rc == 2 and "Traceback" not in err
    assert len(lines) == 1 and "has label 9, outside 0..3" in lines[0], err
    assert lines[0].count(".png") == 1
    assert not list((tmp_path / "run").glob("ckpt_step*.pt"))


# ---------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------


def test_packaged_recipe_is_the_papers_ade20k_setting() -> None:
    recipe = load_task_recipe(SegmentationRecipe, DEFAULT_RECIPE)
    assert (recipe.schedule.iters, recipe.optim.lr, recipe.optim.weight_decay,
            recipe.schedule.poly_power, recipe.data.crop_size) == (40_000, 2e-4, 1e-4, 0.9, 512)
    with pytest.raises(ConfigError, match="data.crop_size must be a multiple of 32"):
        tiny_recipe({"data.crop_size": 500}).validate()


def test_the_data_scale_follows_the_crop_size_unless_base_size_says_otherwise(
        ade: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    packaged = load_task_recipe(SegmentationRecipe, DEFAULT_RECIPE)
    assert packaged.data.base_size is None and packaged.scale == 512  # the paper: 512, 512
    small = load_task_recipe(SegmentationRecipe, DEFAULT_RECIPE,
                             values={"data.crop_size": 128})
    assert small.scale == 128  # not ADE20K's 512: 128-px images are not enlarged 2-8x
    apart = load_task_recipe(SegmentationRecipe, DEFAULT_RECIPE,
                             values={"data.crop_size": 128, "data.base_size": 256})
    assert apart.scale == 256 and "shorter side 256 (--base-size)" in apart.describe()
    # what the run feeds the model, and what its header says
    seen = {}
    original = engine.train_transforms

    def spy(crop_size, base_size, *args, **kwargs):
        seen["train"] = (crop_size, base_size)
        return original(crop_size, base_size, *args, **kwargs)

    monkeypatch.setattr(engine, "train_transforms", spy)
    with caplog.at_level(logging.INFO, logger="fastvit"):
        rc = cli_main(["segment", "train", "--data", str(ade), "--no-val", "--out",
                       str(tmp_path / "run"), "--model", "fastvit_t8", "--num-classes", "3",
                       "--iters", "1", "--batch-size", "2", "--crop-size", "64", "--workers",
                       "0", "--device", "cpu", "--set", "head.fpn_channels=32",
                       "--set", "head.channels=16"])
    assert rc == 0 and seen["train"] == (64, 64)
    assert ("data: shorter side 64 (= crop size) x U(0.5, 2), random 64 x 64 crops; "
            "evaluation at shorter side 64") in caplog.text


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_overfit_reaches_miou(ade: Path, tmp_path: Path) -> None:
    """30 iterations on 4 images: the loss falls and mIoU on those images > 0.8."""
    recipe = tiny_recipe({"schedule.iters": 30, "optim.lr": 5e-3, "run.eval_every_iters": 30,
                          "data.scale_range": (1.0, 1.0), "data.photometric": False})
    report = engine.train(recipe, data_root=ade, out_dir=tmp_path, val_split="training",
                          device="cpu")
    losses = [h["loss"] for h in report["train"]]
    assert losses[-1] < 0.5 * losses[0], losses
    final = report["eval"][-1]
    assert final["step"] == 30 and len(final["IoU"]) == 3
    assert final["mIoU"] > 0.8, final


@pytest.mark.slow
def test_cli_train_evaluate_predict(ade: Path, tmp_path: Path) -> None:
    """Train 4 iterations with mixed precision (bf16 autocast on CPU), checkpoint,
    evaluate with sliding windows, predict colour masks."""
    out = tmp_path / "run"
    sets = [f"--set={k}={v}" for k, v in TINY.items()
            if k in ("data.base_size", "head.fpn_channels", "head.channels", "run.log_every")]
    rc = cli_main(["segment", "train", "--data", str(ade), "--out", str(out), "--model",
                   "fastvit_t8", "--num-classes", "3", "--iters", "4", "--batch-size", "2",
                   "--crop-size", "64", "--workers", "0", "--device", "cpu", "--amp",
                   "--set", "run.eval_every_iters=2", "--set", "run.log_every=2", *sets])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert [e["step"] for e in report["eval"]] == [2, 4]
    assert {"mIoU", "aAcc", "mAcc", "IoU", "Acc"} <= set(report["eval"][-1])
    assert (out / "loss.png").stat().st_size > 0
    assert load_run_checkpoint(out / checkpoint_name(4), "segmentation")["step"] == 4

    rc = cli_main(["segment", "evaluate", "--checkpoint", str(out), "--data",
                   str(ade), "--mode", "slide", "--stride", "21", "--workers", "0",
                   "--json", str(tmp_path / "eval.json")])
    assert rc == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["mode"] == "slide" and 0.0 <= metrics["mIoU"] <= 1.0

    image = ade / "images" / "validation" / "ADE_validation_00000.jpg"
    rc = cli_main(["segment", "predict", "--checkpoint", str(out / checkpoint_name(4)),
                   str(image), "--out", str(tmp_path / "pred"), "--overlay"])
    assert rc == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / "ADE_validation_00000.png"))
    assert mask.shape == (64, 64, 3)
    assert (tmp_path / "pred" / "ADE_validation_00000_overlay.png").is_file()

    rc = cli_main(["segment", "evaluate", "--checkpoint", str(tmp_path / "nope.pt"),
                   "--data", str(ade)])
    assert rc == 2


def untrained_checkpoint(path: Path) -> Path:
    """A checkpoint of the tiny recipe's untrained model (in an earlier release's layout:
    still read, upgraded on load)."""
    recipe = tiny_recipe()
    torch.manual_seed(1)
    model = engine.build_segmenter(recipe, with_pretrained=False)
    torch.save({"task": "segmentation", "recipe": to_dict(recipe), "step": 0, "extra": {},
                "model": model.state_dict()}, path)
    return path


def test_library_load_evaluate_predict(ade: Path, tmp_path: Path) -> None:
    """The functions behind the command: ``load_segmenter`` -> ``LoadedSegmenter``,
    ``evaluate_segmenter`` on a model in train mode (scored in eval mode, handed back in
    train mode), ``predict_label_maps`` over a folder and a glob pattern."""
    loaded = engine.load_segmenter(untrained_checkpoint(tmp_path / "model.pt"))
    assert isinstance(loaded, engine.LoadedSegmenter) and loaded.recipe.model.num_classes == 3
    dataset = ADE20KSegmentation(ade, "validation", 3, EvalTransform(64))
    before = engine.evaluate_segmenter(loaded.model, dataset, DistEnv(), num_classes=3,
                                       workers=0)
    loaded.model.train()
    again = engine.evaluate_segmenter(loaded.model, dataset, DistEnv(), num_classes=3,
                                      workers=0)
    assert loaded.model.training and again["aAcc"] == before["aAcc"] > 0
    loaded.model.eval()
    folder = ade / "images" / "validation"
    written = predict_label_maps(loaded, [folder, str(ade / "images" / "training" / "*.jpg")],
                                 tmp_path / "pred", log=lambda line: None)
    names = [*sorted(folder.glob("*.jpg")), *sorted((ade / "images" / "training").glob("*"))]
    assert [r["image"] for r in written] == [str(p) for p in names] and len(names) == 7
    assert {p.name for p in (tmp_path / "pred").iterdir()} == {f"{p.stem}.png" for p in names}


def test_predict_without_images_is_one_line(ade: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    checkpoint = str(tmp_path / "not-even-read.pt")
    for inputs in ([str(tmp_path / "empty")], [str(tmp_path / "*.png")]):
        rc = cli_main(["segment", "predict", "--checkpoint", checkpoint, *inputs,
                       "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and "no images in" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_torchrun_evaluate_matches_single_process(ade: Path, tmp_path: Path) -> None:
    """2 gloo processes score 3 images (2 + 1) and all-reduce their confusion matrices:
    exactly the single-process metrics."""
    ckpt = untrained_checkpoint(tmp_path / "untrained.pt")
    args = ["segment", "evaluate", "--checkpoint", str(ckpt), "--data", str(ade),
            "--workers", "0", "--device", "cpu"]
    assert cli_main([*args, "--out", str(tmp_path / "single.json")]) == 0
    proc = torchrun([*args, "--out", str(tmp_path / "ddp.json")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((tmp_path / "single.json").read_text())
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert single["aAcc"] > 0
    for key in ("mIoU", "aAcc", "mAcc"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-12), key
    assert ddp["IoU"] == pytest.approx(single["IoU"], abs=1e-12, nan_ok=True)


def test_a_checkpoint_with_the_flat_recipe_is_refused_in_one_line(ade: Path, tmp_path: Path,
                                                                   capsys) -> None:
    """Recipes had no sections before (``model: fastvit_t8``, ``lr: ...``): such a
    checkpoint is named in one CheckpointError line, not rebuilt from the defaults."""
    from fastvit.errors import CheckpointError

    flat = tmp_path / "flat.pt"
    torch.save({"task": "segmentation", "recipe": {"model": "fastvit_t8", "num_classes": 3,
                                                   "lr": 1e-3}, "step": 0, "extra": {},
                "model": {}}, flat)
    with pytest.raises(CheckpointError, match="flat shape of an older fastvit"):
        engine.load_segmenter(flat)
    rc = cli_main(["segment", "predict", "--checkpoint", str(flat), str(ade / "images"),
                   "--out", str(tmp_path / "pred")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "'model', 'num_classes', 'lr'" in err, err
