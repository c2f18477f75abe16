"""``fastvit predict``: top-k with class names, eager and ONNX Runtime agree, batching,
and one clear error per bad input.

The model is the digits classifier of ``_deploy_utils`` (about 89% held-out accuracy);
its checkpoint carries the class names ``digit 0``..``digit 9``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastvit.cli import main as cli
from fastvit.deploy.predict import eager_predictor, onnx_predictor, predict, read_image
from fastvit.labels import imagenet_class_names
from fastvit.pipeline import eval_transform, load_model
from tests.helpers.digits import DIGITS_SIZE, digits_assets


def val_images(count: int) -> list[Path]:
    files = sorted(digits_assets().val.rglob("*.png"))
    step = max(1, len(files) // count)
    return files[::step][:count]


def run_json(capsys, argv: list[str]) -> list[dict]:
    assert cli(["predict", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eager_topk_uses_checkpoint_class_names_and_is_right(capsys) -> None:
    assets = digits_assets()
    files = val_images(40)
    results = run_json(capsys, [*files, "--model", "fastvit_t8", "--checkpoint",
                                assets.checkpoint, "--topk", "3", "--image-size", DIGITS_SIZE])
    assert [r["image"] for r in results] == [str(f) for f in files]
    for r in results:
        probs = [p["probability"] for p in r["predictions"]]
        assert [p["rank"] for p in r["predictions"]] == [1, 2, 3]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(p["label"] == f"digit {p['index']}" for p in r["predictions"])
    truth = [int(f.parent.name) for f in files]
    correct = sum(r["predictions"][0]["index"] == t for r, t in zip(results, truth, strict=True))
    assert correct / len(files) >= 0.75  # the preprocessing is the one the model was fitted with


def test_predictions_equal_the_model_applied_by_hand(capsys) -> None:
    assets = digits_assets()
    files = val_images(5)
    results = run_json(capsys, [*files, "--model", "fastvit_t8", "--checkpoint",
                                assets.checkpoint, "--topk", "2", "--image-size", DIGITS_SIZE])
    dm = load_model(checkpoint=assets.checkpoint)
    transform = eval_transform(dm.cfg, DIGITS_SIZE)
    batch = torch.stack([transform(read_image(f)) for f in files])
    with torch.no_grad():
        probs = dm.model(batch).softmax(1)
    for row, r in zip(probs, results, strict=True):
        top = row.topk(2)
        assert [p["index"] for p in r["predictions"]] == top.indices.tolist()
        assert [p["probability"] for p in r["predictions"]] == pytest.approx(
            top.values.tolist(), abs=1e-6)


def test_onnx_runtime_matches_eager_and_batching_does_not_matter() -> None:
    assets = digits_assets()
    files = val_images(7)
    dm = load_model(checkpoint=assets.checkpoint)
    eager = predict(files, eager_predictor(dm, DIGITS_SIZE), topk=3, batch_size=16)
    onnx = predict(files, onnx_predictor(assets.onnx, model_name="fastvit_t8", image_size=None,
                                         class_names=None), topk=3, batch_size=3)
    for a, b in zip(eager, onnx, strict=True):
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        assert [p["label"] for p in b["predictions"]] == [p["label"] for p in a["predictions"]]
        assert [p["probability"] for p in a["predictions"]] == pytest.approx(
            [p["probability"] for p in b["predictions"]], abs=1e-4)


def test_cli_onnx_file_knows_its_model_and_labels(capsys) -> None:
    assets = digits_assets()
    files = val_images(2)
    results = run_json(capsys, [*files, "--runtime", "onnx", "--onnx", assets.onnx,
                                "--topk", "1"])
    assert all(r["predictions"][0]["label"].startswith("digit ") for r in results)
    assert cli(["predict", str(files[0]), "--onnx", str(assets.onnx)]) == 0
    table = capsys.readouterr().out
    assert table.startswith(str(files[0])) and "1. " in table and "% " in table


def test_imagenet_class_names_for_a_1000_class_model(capsys) -> None:
    files = val_images(1)
    assert cli(["predict", str(files[0]), "--model", "fastvit_t8", "--image-size", "64",
                "--json"]) == 0
    out, err = capsys.readouterr()
    names = imagenet_class_names()
    assert all(p["label"] == names[p["index"]] for p in json.loads(out)[0]["predictions"])
    assert "no --checkpoint or --pretrained given" in err


def test_unreadable_and_missing_images_are_named(tmp_path, capsys) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    good = val_images(1)[0]
    assert cli(["predict", str(good), str(bad), "--model", "fastvit_t8",
                "--image-size", "64", "--csv", str(tmp_path / "out.csv")]) == 2
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]  # after the random-weights notes
    assert last.startswith("fastvit predict: error: cannot read image") and str(bad) in last
    assert "Traceback" not in err
    assert out == "" and not (tmp_path / "out.csv").exists()  # no partial output
    assert cli(["predict", str(tmp_path / "missing.png"), "--model", "fastvit_t8"]) == 2
    assert f"image not found: {tmp_path / 'missing.png'}" in capsys.readouterr().err
    assert cli(["predict", str(tmp_path / "*.webp"), "--model", "fastvit_t8"]) == 2
    assert f"no images in pattern '{tmp_path / '*.webp'}'" in capsys.readouterr().err


def test_a_folder_recursively_in_batches_to_csv(tmp_path, capsys) -> None:
    """Folders are searched recursively, read a batch at a time; an unreadable file found
    there is skipped with one line; the CSV has one row per image with the top-k."""
    import csv
    import shutil

    assets = digits_assets()
    folder = tmp_path / "photos"
    shutil.copytree(assets.val, folder / "nested")  # <digit>/<n>.png, one level deeper
    (folder / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (folder / "nested" / "3" / "broken.png").write_bytes(b"\x89PNG broken")
    expected = sorted(p for p in folder.rglob("*.png"))
    table = tmp_path / "preds.csv"
    assert cli(["predict", str(folder), "--checkpoint", str(assets.checkpoint), "--topk", "2",
                "--batch-size", "7", "--image-size", str(DIGITS_SIZE), "--csv",
                str(table)]) == 0
    out, err = capsys.readouterr()
    assert err.count("skipping unreadable image") == 1 and "broken.png" in err
    rows = list(csv.DictReader(table.open()))
    assert [r["image"] for r in rows] == [str(p) for p in expected]
    assert list(rows[0]) == ["image", "label_1", "index_1", "probability_1", "label_2",
                             "index_2", "probability_2", "error"]
    broken = [r for r in rows if r["image"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["error"] and broken[0]["label_1"] == ""
    scored = [r for r in rows if not r["error"]]
    assert len(scored) == len(expected) - 1
    assert all(r["label_1"] == f"digit {r['index_1']}" for r in scored)
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) for r in scored)
    right = sum(int(r["index_1"]) == int(Path(r["image"]).parent.name) for r in scored)
    assert right / len(scored) >= 0.75
    # the same predictions as named files in one batch, and through a glob pattern
    some = expected[:5]
    named = run_json(capsys, [*some, "--checkpoint", assets.checkpoint, "--topk", "2",
                              "--image-size", DIGITS_SIZE])
    by_csv = {r["image"]: (r["label_1"], r["label_2"]) for r in rows}
    assert [(p["predictions"][0]["label"], p["predictions"][1]["label"]) for p in named] == [
        by_csv[str(p)] for p in some]
    globbed = run_json(capsys, [str(folder / "nested" / "1" / "*.png"), "--checkpoint",
                                assets.checkpoint, "--image-size", DIGITS_SIZE])
    assert [r["image"] for r in globbed] == [str(p) for p in expected
                                             if p.parent.name == "1"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "fastvit_t8", "--checkpoint", "{missing}"], "checkpoint not found"),
    (["--model", "fastvit_sa12", "--checkpoint", "{digits}"], "holds fastvit_t8 weights"),
    (["--runtime", "onnx", "--onnx", "{missing}"], "ONNX file not found"),
    (["--model", "fastvit_t8", "--runtime", "eager", "--onnx", "{digits_onnx}"],
     "--onnx FILE runs on ONNX Runtime: drop --runtime eager"),
    ([], "give --checkpoint PATH"),
])
def test_cli_bad_options_are_one_clear_error(tmp_path, capsys, argv, message) -> None:
    assets = digits_assets()
    fill = {"{missing}": str(tmp_path / "nope"), "{digits}": str(assets.checkpoint),
            "{digits_onnx}": str(assets.onnx)}
    image = str(val_images(1)[0])
    assert cli(["predict", image, *[fill.get(a, a) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit predict: error:") and message in err
