"""Mask R-CNN + FastViT: COCO data, pycocotools metrics, training, CLI, bad input.

Synthetic COCO sets (tests/_task_utils.py): 128x128 images with 2-3 squares
(polygon masks) and discs (RLE masks), category ids 3 and 7.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from fastvit.cli import main as cli_main
from fastvit.errors import DataError
from fastvit.run.distributed import DistEnv
from fastvit.run.recipes import get_value
from fastvit.run.store import checkpoint_name, load_run_checkpoint
from fastvit.tasks.detection import engine
from fastvit.tasks.detection.data import coco_dataset
from fastvit.tasks.detection.metrics import SUMMARY_NAMES, coco_evaluate, to_coco_results
from fastvit.tasks.detection.predict import predict_detections
from fastvit.tasks.detection.recipe import DEFAULT_RECIPE, DetectionRecipe
from fastvit.tasks.recipes import load_task_recipe
from tests.helpers.tasks import make_coco, torchrun

ROOT = Path(__file__).resolve().parents[2]
#: heads shrunk for CPU speed; everything else is the real recipe
TINY = {"model.variant": "fastvit_t8", "data.min_size": 128, "data.max_size": 128,
        "data.batch_size": 2, "data.workers": 0, "head.fpn_channels": 64, "head.box_dim": 256,
        "head.mask_channels": 64, "head.rois_per_image": 64, "head.rpn_proposals_train": 256,
        "head.rpn_proposals_test": 100, "schedule.warmup_iters": 2, "run.log_every": 2}


def tiny_recipe(changes: dict | None = None) -> DetectionRecipe:
    """The packaged recipe with the TINY changes (and ``changes``, dotted keys)."""
    return load_task_recipe(DetectionRecipe, DEFAULT_RECIPE, values={**TINY, **(changes or {})})


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("coco")
    images, ann = make_coco(root, "train", n_images=5, size=128)
    return root, images, ann


@pytest.fixture(scope="module")
def trained(coco, tmp_path_factory) -> Path:
    """``fastvit detect train`` on the synthetic set: 4 epochs x 2 iterations, evaluated
    on the training images after the last epoch."""
    root, _, _ = coco
    out = tmp_path_factory.mktemp("det_run")
    sets = [f"--set={k}={v}" for k, v in TINY.items()
            if k not in ("model.variant", "data.min_size", "data.max_size", "data.batch_size")]
    rc = cli_main(["detect", "train", "--data", str(root), "--train-split", "train",
                   "--val-split", "train", "--out", str(out), "--model", "fastvit_t8",
                   "--epochs", "4", "--batch-size", "2", "--lr", "1e-3", "--min-size", "128",
                   "--max-size", "128", "--device", "cpu", "--set=run.eval_every=4", *sets])
    assert rc == 0
    return out


# ---------------------------------------------------------------------------
# Metrics on hand-computed cases
# ---------------------------------------------------------------------------


def _gt_coco(tmp_path: Path) -> COCO:
    """Two 100x100 images, each with two 40x40 squares (area 1600: "medium")."""
    anns, images = [], []
    boxes = {1: [(10, 10), (50, 50)], 2: [(5, 40), (55, 5)]}
    for image_id, corners in boxes.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 100,
                       "width": 100})
        for x, y in corners:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 5,
                         "bbox": [x, y, 40, 40], "area": 1600, "iscrowd": 0,
                         "segmentation": [[x, y, x + 40, y, x + 40, y + 40, x, y + 40]]})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 5, "name": "box"}]}))
    return COCO(str(path))


def _model_output(coco_gt: COCO, image_id: int, keep: list[int], score: float) -> dict:
    """What Mask R-CNN would return for a perfect detector of objects ``keep``."""
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
    anns = [anns[i] for i in keep]
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
    masks = torch.stack([torch.from_numpy(coco_gt.annToMask(a)).float() for a in anns])[:, None]
    return {"boxes": boxes, "labels": torch.ones(len(anns), dtype=torch.int64),
            "scores": torch.full((len(anns),), score), "masks": masks}


def test_coco_ap_perfect_predictions(tmp_path: Path) -> None:
    gt = _gt_coco(tmp_path)
    results = []
    for image_id in (1, 2):
        results += to_coco_results(image_id, _model_output(gt, image_id, [0, 1], 0.9), [5])
    metrics = coco_evaluate(gt, results, verbose=False)
    for iou_type in ("bbox", "segm"):
        m = metrics[iou_type]
        assert set(m) == set(SUMMARY_NAMES)
        for name in ("AP", "AP50", "AP75", "APm", "AR10", "AR100", "ARm"):
            assert m[name] == pytest.approx(1.0, abs=1e-9), (iou_type, name)
        assert m["AR1"] == pytest.approx(0.5, abs=1e-9)  # 1 detection counted, 2 objects/image
        assert m["APs"] == -1 and m["APl"] == -1  # no small / large ground truth


def test_coco_ap_half_recall(tmp_path: Path) -> None:
    """One of two objects per image found exactly, no false positive: precision is 1
    up to recall 0.5 and there is nothing beyond, so of COCO's 101 recall points
    0.00..1.00 the 51 points 0.00..0.50 score 1 -> AP = 51/101 at every IoU threshold;
    recall = 0.5 with 1 detection per image already."""
    gt = _gt_coco(tmp_path)
    results = []
    for image_id in (1, 2):
        results += to_coco_results(image_id, _model_output(gt, image_id, [0], 0.8), [5])
    metrics = coco_evaluate(gt, results, verbose=False)
    for iou_type in ("bbox", "segm"):
        m = metrics[iou_type]
        for name in ("AP", "AP50", "AP75", "APm"):
            assert m[name] == pytest.approx(51 / 101, abs=1e-9), (iou_type, name)
        for name in ("AR1", "AR10", "AR100"):
            assert m[name] == pytest.approx(0.5, abs=1e-9), (iou_type, name)


def test_coco_ap_without_detections(tmp_path: Path) -> None:
    metrics = coco_evaluate(_gt_coco(tmp_path), [], verbose=False)
    assert metrics["bbox"]["AP"] == 0.0 and metrics["segm"]["AR100"] == 0.0


def test_rle_masks_roundtrip() -> None:
    mask = torch.zeros(1, 1, 20, 30)
    mask[0, 0, 3:9, 4:17] = 0.9
    out = {"boxes": torch.tensor([[4.0, 3.0, 17.0, 9.0]]), "labels": torch.tensor([2]),
           "scores": torch.tensor([0.7]), "masks": mask}
    (entry,) = to_coco_results(11, out, category_ids=[3, 7])
    assert entry["category_id"] == 7 and entry["bbox"] == [4.0, 3.0, 13.0, 6.0]
    decoded = mask_utils.decode(entry["segmentation"])
    assert decoded.shape == (20, 30) and decoded.sum() == 6 * 13
    json.dumps(entry)  # RLE counts are text, so results can be written as JSON


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def test_dataset_targets(coco) -> None:
    root, images, ann = coco
    dataset = coco_dataset(images, ann, train=False)
    raw = json.loads(ann.read_text())
    base = engine.base_dataset(dataset)
    assert base.category_ids == [3, 7] and base.class_names == ["square", "disc"]
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 128, 128)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    gt = [a for a in raw["annotations"] if a["image_id"] == target["image_id"]]
    assert target["labels"].tolist() == [{3: 1, 7: 2}[a["category_id"]] for a in gt]
    expected_xyxy = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                      a["bbox"][1] + a["bbox"][3]] for a in gt]
    assert target["boxes"].tolist() == expected_xyxy
    assert target["masks"].shape == (len(gt), 128, 128)
    areas = target["masks"].flatten(1).sum(1).tolist()
    assert areas == pytest.approx([a["area"] for a in gt], rel=0.1)


def test_train_flip_moves_boxes_and_masks_together(coco) -> None:
    _, images, ann = coco
    dataset = coco_dataset(images, ann, train=True, hflip=1.0)
    plain = coco_dataset(images, ann, train=False)
    (_, flipped), (_, target) = dataset[0], plain[0]
    x0, x1 = target["boxes"][:, 0], target["boxes"][:, 2]
    torch.testing.assert_close(flipped["boxes"][:, 0], 128 - x1)
    torch.testing.assert_close(flipped["boxes"][:, 2], 128 - x0)
    assert torch.equal(flipped["masks"], target["masks"].flip(-1))


def _bad_coco(tmp_path: Path, mutate) -> tuple[Path, Path]:
    images, ann = make_coco(tmp_path, "train", n_images=2, size=64)
    data = json.loads(ann.read_text())
    mutate(data)
    ann.write_text(json.dumps(data))
    return images, ann


def test_missing_annotation_file(tmp_path: Path) -> None:
    missing = tmp_path / "annotations" / "instances_val.json"
    with pytest.raises(DataError, match="annotation file not found: .*instances_val.json"):
        coco_dataset(tmp_path, missing, train=False)


def test_image_listed_but_absent(tmp_path: Path) -> None:
    images, ann = make_coco(tmp_path, "train", n_images=2, size=64)
    (images / "train_0001.png").unlink()
    with pytest.raises(DataError, match=r"image listed in .*instances_train\.json not found: "
                                        r".*train_0001\.png"):
        coco_dataset(images, ann, train=True)


def test_unknown_category(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["annotations"][0]["category_id"] = 99

    images, ann = _bad_coco(tmp_path, mutate)
    with pytest.raises(DataError, match=r"instances_train\.json: annotation 1 has category_id "
                                        r"99, which is not in 'categories'"):
        coco_dataset(images, ann, train=True)


def test_not_json(tmp_path: Path) -> None:
    images, ann = make_coco(tmp_path, "train", n_images=1, size=64)
    ann.write_text("{not json")
    with pytest.raises(DataError, match="instances_train.json is not valid JSON"):
        coco_dataset(images, ann, train=False)


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    images, ann = make_coco(tmp_path, "train", n_images=2, size=64)
    (images / "train_0000.png").unlink()
    rc = cli_main(["detect", "train", "--data", str(tmp_path), "--train-split", "train",
                   "--no-val", "--out", str(tmp_path / "run"), "--model", "fastvit_t8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and "train_0000.png" in err and err.startswith("fastvit detect")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_detector_takes_imagenet_backbone_weights(tmp_path: Path) -> None:
    """``pretrained`` (a classification checkpoint, head included) ends up in the
    detector's backbone; the FPN and heads stay freshly initialised."""
    import fastvit
    from fastvit.checkpoints import save_checkpoint

    classifier = fastvit.create_model("fastvit_t8", num_classes=10)
    fastvit.randomize_model_stats(classifier, seed=2)
    save_checkpoint(classifier, tmp_path / "t8.safetensors")
    recipe = tiny_recipe({"model.pretrained": str(tmp_path / "t8.safetensors")})
    detector = engine.build_detector(recipe, num_classes=2)
    body = detector.backbone.body.body.state_dict()
    reference = classifier.state_dict()
    assert body and all(torch.equal(t, reference[k]) for k, t in body.items())
    assert detector.roi_heads.box_predictor.cls_score.out_features == 3  # 2 + background


# ---------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------


def test_packaged_recipe_is_the_papers_1x_schedule() -> None:
    recipe = tiny_recipe()
    packaged = load_task_recipe(DetectionRecipe, DEFAULT_RECIPE)
    assert (packaged.schedule.epochs, packaged.optim.lr, packaged.optim.weight_decay,
            packaged.schedule.lr_steps) == (12, 2e-4, 1e-4, (8, 11))
    assert (packaged.data.min_size, packaged.data.max_size, packaged.head.box_dim) == (
        800, 1333, 1024)
    assert recipe.schedule.epochs == 12 and recipe.head.fpn_channels == 64  # TINY: its keys


def test_small_data_preset_and_image_size(tmp_path: Path, monkeypatch, capsys) -> None:
    """maskrcnn_small: the 1x recipe (via ``base:``) with smaller heads, named in --help;
    --image-size sets the scale of the data."""
    from fastvit.tasks.detection.recipe import SMALL_RECIPE

    paper = load_task_recipe(DetectionRecipe, DEFAULT_RECIPE)
    small = load_task_recipe(DetectionRecipe, SMALL_RECIPE)
    assert small.optim == paper.optim and small.backbone == paper.backbone
    for key in ("head.fpn_channels", "head.box_dim", "head.mask_channels",
                "head.rois_per_image", "head.rpn_proposals_train", "data.min_size"):
        assert get_value(small, key) < get_value(paper, key), key
    assert max(small.schedule.lr_steps) < small.schedule.epochs
    small.validate()
    with pytest.raises(SystemExit):
        cli_main(["detect", "train", "--help"])
    assert "--config maskrcnn_small" in capsys.readouterr().out
    seen = {}

    def train(recipe, **kwargs):  # what the command would train, without training
        seen["recipe"] = recipe
        return {"last_eval": {}, "checkpoint": "unused"}

    monkeypatch.setattr(engine, "train", train)
    assert cli_main(["detect", "train", "--config", SMALL_RECIPE, "--image-size", "128",
                     "--train-images", str(tmp_path), "--train-ann", str(tmp_path / "a.json"),
                     "--no-val", "--out", str(tmp_path / "run")]) == 0
    recipe = seen["recipe"]
    assert (recipe.data.min_size, recipe.data.max_size, recipe.head.fpn_channels) == (
        128, 213, 64)
    assert "shorter side 128 (longer <= 213)" in recipe.describe()


def test_recipe_rejects_unknown_and_invalid(tmp_path: Path) -> None:
    from fastvit.errors import ConfigError

    bad = tmp_path / "r.yaml"
    bad.write_text(f"base: {DEFAULT_RECIPE}\nschedule:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown recipe key 'schedule.epochz'"):
        load_task_recipe(DetectionRecipe, DEFAULT_RECIPE, bad)
    with pytest.raises(ConfigError, match="schedule.lr_steps"):
        tiny_recipe({"schedule.lr_steps": [11, 8]}).validate()


# ---------------------------------------------------------------------------
# Training and the command line
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_evaluate_predict(coco, trained: Path, tmp_path: Path) -> None:
    """``detect train`` (the ``trained`` fixture, 8 iterations) lowers the loss and writes
    checkpoint + metrics; ``evaluate`` and ``predict`` run from the checkpoint."""
    root, images, ann = coco
    out = trained
    report = json.loads((out / "metrics.json").read_text())
    losses = [h["loss"] for h in report["train"]]  # logged at step 1 and every 2 steps
    assert len(losses) == 5 and losses[-1] < 0.75 * losses[0], losses
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"} <= set(
        report["train"][0])
    assert [e["epoch"] for e in report["eval"]] == [4]
    assert set(report["eval"][-1]["bbox"]) == set(SUMMARY_NAMES)
    assert 0.0 <= report["eval"][-1]["segm"]["AP"] <= 1.0
    assert (out / "loss.png").stat().st_size > 0

    state = load_run_checkpoint(out / checkpoint_name(8), "detection")
    assert state["step"] == 8 and state["metadata"]["category_ids"] == [3, 7]
    assert (out / "best.pt").is_file()

    rc = cli_main(["detect", "evaluate", "--checkpoint", str(out), "--images", str(images),
                   "--ann", str(ann), "--json", str(tmp_path / "eval.json"), "--device", "cpu",
                   "--workers", "0"])
    assert rc == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["bbox"]["AP"] == pytest.approx(report["eval"][-1]["bbox"]["AP"], abs=1e-6)

    pred_dir = tmp_path / "pred"
    rc = cli_main(["detect", "predict", "--checkpoint", str(out / checkpoint_name(8)),
                   str(images / "train_0000.png"), "--out", str(pred_dir),
                   "--score-threshold", "0.05"])
    assert rc == 0
    drawn = np.asarray(Image.open(pred_dir / "train_0000.png"))
    assert drawn.shape == (128, 128, 3)
    (entry,) = json.loads((pred_dir / "predictions.json").read_text())
    assert entry["detections"] and {d["label"] for d in entry["detections"]} <= {"square",
                                                                                 "disc"}


def test_library_load_evaluate_predict(coco, trained: Path, tmp_path: Path) -> None:
    """The functions behind the command: ``load_detector`` -> ``LoadedDetector``,
    ``evaluate_detector`` on a model in train mode (scored in eval mode, handed back in
    train mode), ``predict_detections`` over a folder and a glob pattern."""
    _, images, ann = coco
    loaded = engine.load_detector(trained)
    assert isinstance(loaded, engine.LoadedDetector)
    assert loaded.category_ids == [3, 7] and loaded.class_names == ["square", "disc"]
    assert loaded.recipe.model.variant == "fastvit_t8" and not loaded.model.training
    loaded.model.train()
    metrics = engine.evaluate_detector(loaded.model, coco_dataset(images, ann, train=False),
                                       DistEnv(), workers=0, verbose=False)
    assert loaded.model.training
    report = json.loads((trained / "metrics.json").read_text())
    assert metrics["bbox"]["AP"] == pytest.approx(report["eval"][-1]["bbox"]["AP"], abs=1e-6)

    loaded.model.eval()
    results = predict_detections(loaded, [images, str(images / "train_000[01].png")],
                                 tmp_path, score_threshold=0.05, log=lambda line: None)
    names = sorted(p.name for p in images.glob("*.png"))
    assert [Path(r["image"]).name for r in results] == [*names, *names[:2]]
    assert {Path(r["drawing"]).name for r in results} == set(names)
    assert json.loads((tmp_path / "predictions.json").read_text()) == results


def test_predict_without_images_is_one_line(trained: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    for inputs in ([str(tmp_path / "empty")], [str(tmp_path / "*.jpg")]):
        rc = cli_main(["detect", "predict", "--checkpoint", str(trained), *inputs,
                       "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and "no images in" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resume_continues_from_checkpoint(tmp_path: Path) -> None:
    images, ann = make_coco(tmp_path, "train", n_images=4, size=64, seed=5)
    recipe = tiny_recipe({"data.min_size": 64, "data.max_size": 64, "optim.lr": 1e-3,
                          "schedule.epochs": 2})
    first = engine.train(recipe, train_images=images, train_ann=ann, out_dir=tmp_path / "a",
                         device="cpu", max_steps=2)
    assert first["stopped"] and first["step"] == 2
    second = engine.train(recipe, train_images=images, train_ann=ann, out_dir=tmp_path / "a",
                          device="cpu", resume="auto")
    assert not second["stopped"] and [h["step"] for h in second["train"]] == [1, 2, 4]
    state = load_run_checkpoint(tmp_path / "a" / checkpoint_name(4), "detection")
    assert state["step"] == 4 and state["epoch"] == 2


@pytest.mark.slow
def test_torchrun_evaluate_matches_single_process(coco, trained: Path, tmp_path: Path) -> None:
    """2 gloo processes shard the 5 images 3 + 2, gather the detections on rank 0 and
    get the AP of a single process (nothing dropped or counted twice)."""
    _, images, ann = coco
    args = ["detect", "evaluate", "--checkpoint", str(trained), "--images",
            str(images), "--ann", str(ann), "--batch-size", "1", "--workers", "0",
            "--device", "cpu"]
    assert cli_main([*args, "--json", str(tmp_path / "single.json")]) == 0
    proc = torchrun([*args, "--out", str(tmp_path / "ddp.json")])  # the old spelling of --json
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("box AP") == 1  # only rank 0 reports
    single = json.loads((tmp_path / "single.json").read_text())
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert single["bbox"]["AP"] > 0.05 and single["segm"]["AP"] > 0.05, single
    for iou_type in ("bbox", "segm"):
        assert ddp[iou_type] == pytest.approx(single[iou_type], abs=1e-6)


@pytest.mark.slow
def test_overfit_reaches_box_ap(coco, tmp_path: Path) -> None:
    """A few dozen iterations on 4 images: box AP on those images > 0.5."""
    _, images, ann = coco
    recipe = tiny_recipe({"schedule.epochs": 15, "optim.lr": 1e-3, "run.eval_every": 15})
    report = engine.train(recipe, train_images=images, train_ann=ann, val_images=images,
                          val_ann=ann, out_dir=tmp_path, device="cpu")
    assert report["eval"][-1]["bbox"]["AP"] > 0.5
    assert report["eval"][-1]["segm"]["AP"] > 0.5
