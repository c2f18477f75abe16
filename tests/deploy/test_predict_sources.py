"""``fastvit predict --data SOURCE``: the evaluation split of a folder, shards or a datasets
folder gives the predictions of the same images as files, each row with its true label,
and top-1 / top-5 over the rows.

The model is the digits classifier of ``tests.helpers.digits`` (class names ``digit 0``..
``digit 9``); the data are 2 of its held-out images per class (+ one unreadable file)
written as an ImageFolder, as shards and as a ``save_to_disk`` folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fastvit.cli import main as cli
from fastvit.data.shard_writer import write_shards
from fastvit.deploy.predict import eager_predictor, predict
from fastvit.pipeline import load_model
from tests.helpers.digits import DIGITS_SIZE, digits_assets

datasets = pytest.importorskip("datasets")
pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The same 20 val images (+ broken.png in ``digit 3``) three ways, and 10 train images."""
    assets = digits_assets()
    root = tmp_path_factory.mktemp("sources")
    folder = root / "folder"
    for split, take in (("train", slice(0, 1)), ("val", slice(1, 3))):
        for digit in range(10):
            for src in sorted((assets.val / str(digit)).glob("*.png"))[take]:
                target = folder / split / f"digit {digit}" / src.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(src.read_bytes())
    (folder / "val" / "digit 3" / "broken.png").write_bytes(b"\x89PNG broken")
    write_shards(folder, root / "shards", shard_size=8, progress=False)
    names = [f"digit {d}" for d in range(10)]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split, name in (("train", "train"), ("val", "validation")):
        files = val_files(folder) if split == "val" else sorted((folder / split).rglob("*.png"))
        splits[name] = datasets.Dataset.from_dict(
            {"image": [{"bytes": f.read_bytes(), "path": None} for f in files],
             "label": [names.index(f.parent.name) for f in files]}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root / "datasets"))
    return {"folder": folder, "shards": root / "shards", "datasets": root / "datasets"}


@pytest.fixture(scope="module")
def by_file(sources) -> dict[Path, dict]:
    """The top-2 of every readable val image, predicted as a file."""
    files = [f for f in val_files(sources["folder"]) if f.name != "broken.png"]
    predictor = eager_predictor(load_model(checkpoint=digits_assets().checkpoint), DIGITS_SIZE)
    return dict(zip(files, predict(files, predictor, topk=2), strict=True))


def val_files(folder: Path) -> list[Path]:
    return sorted((folder / "val").rglob("*.png"))


def file_of(name: str, kind: str, folder: Path) -> Path:
    """The val file a row of ``kind`` was written from."""
    if kind == "shards":  # SHARD.tar:KEY.EXT, KEY = the file's path under val/
        return folder / "val" / name.split(".tar:", 1)[1]
    if kind == "datasets":  # SOURCE[validation]#ROW, rows in val_files order
        assert "[validation]#" in name
        return val_files(folder)[int(name.rsplit("#", 1)[1])]
    return Path(name)


@pytest.mark.parametrize("kind", ["folder", "shards", "datasets"])
def test_data_rows_are_the_files_predictions_with_labels(sources, by_file, kind, tmp_path,
                                                        capsys):
    assets = digits_assets()
    out = tmp_path / "preds.json"
    assert cli(["predict", "--data", str(sources[kind]), "--checkpoint",
                str(assets.checkpoint), "--topk", "2", "--image-size", str(DIGITS_SIZE),
                "--batch-size", "8", "--json", str(out), "--csv", str(tmp_path / "p.csv")]) == 0
    printed, err = capsys.readouterr()
    rows = json.loads(out.read_text())
    files = [file_of(r["image"], kind, sources["folder"]) for r in rows]
    assert sorted(files) == val_files(sources["folder"])  # each val image once
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and files[rows.index(bad[0])].name == "broken.png"
    assert bad[0]["predictions"] == [] and err.count("skipping unreadable image") == 1
    good = [(r, f) for r, f in zip(rows, files, strict=True) if "error" not in r]
    assert all(r["label"] == f.parent.name for r, f in good)
    for row, file in good:
        expected = by_file[file]
        assert [p["index"] for p in row["predictions"]] == [
            p["index"] for p in expected["predictions"]]
        assert [p["probability"] for p in row["predictions"]] == pytest.approx(
            [p["probability"] for p in expected["predictions"]], abs=1e-5)
    right = sum(r["predictions"][0]["label"] == r["label"] for r, _ in good)
    summary = printed.strip().splitlines()[-1]
    assert summary.startswith(f"top-1 {100 * right / len(good):.2f}%  top-5 ")
    assert "over 20 images of " in summary and "(1 skipped)" in summary
    table = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(table[0])[:3] == ["image", "label", "label_1"]
    assert [t["label"] for t in table] == [r["label"] for r in rows]


def test_onnx_runtime_over_shards_agrees_with_eager(sources, capsys):
    assets = digits_assets()
    argv = ["predict", "--data", str(sources["shards"]), "--topk", "1", "--json"]
    assert cli([*argv, "--onnx", str(assets.onnx)]) == 0
    onnx = json.loads(capsys.readouterr().out)
    assert cli([*argv, "--checkpoint", str(assets.checkpoint), "--image-size",
                str(DIGITS_SIZE)]) == 0
    eager = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in onnx] == [r["image"] for r in eager]
    assert [r["label"] for r in onnx] == [r["label"] for r in eager]
    assert [r["predictions"][:1] and r["predictions"][0]["index"] for r in onnx] == [
        r["predictions"][:1] and r["predictions"][0]["index"] for r in eager]


@pytest.mark.parametrize(("argv", "message"), [
    (["{image}", "--data", "{folder}"], "give images (IMAGE|DIR|GLOB...) or --data SOURCE, "
                                        "not both"),
    ([], "nothing to predict: give images"),
    (["--data", "{folder}", "--model", "fastvit_t8", "--image-size", "32"],
     "the classes of ImageFolder"),
    (["--data", "{folder}/nowhere"], "--data {folder}/nowhere: no such folder"),
])
def test_images_or_data_one_clear_error(sources, capsys, argv, message):
    fill = {"{image}": str(val_files(sources["folder"])[0]), "{folder}": str(sources["folder"])}
    argv = [fill.get(a, a).replace("{folder}", fill["{folder}"]) for a in argv]
    message = message.replace("{folder}", fill["{folder}"])
    if "--model" not in argv:
        argv += ["--checkpoint", str(digits_assets().checkpoint)]
    assert cli(["predict", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastvit predict: error:") and message in err[-1]
