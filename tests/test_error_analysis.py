"""``fastvit evaluate``'s error analysis: per-class accuracy, the confusion matrix and the
most confident mistakes, with their plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastvit.cli import main as cli_main
from tests.helpers.digits import DIGITS_SIZE, digits_assets


@pytest.mark.slow
def test_per_class_confusion_matrix_and_worst_mistakes(tmp_path, capsys):
    """The digits classifier of the deploy tests on its held-out digits (up to 30 a class)."""
    assets = digits_assets()
    data = tmp_path / "digits"
    for folder in assets.val.iterdir():  # folders named like the checkpoint's classes
        shutil.copytree(folder, data / "val" / f"digit {folder.name}")
    out = tmp_path / "results" / "val.json"
    assert cli_main(["evaluate", "--checkpoint", str(assets.checkpoint), "--data", str(data),
                     "--image-size", str(DIGITS_SIZE), "--workers", "0", "--json",
                     str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    row, analysis = result["sets"]["val"], result["analysis"]
    names = [f"digit {k}" for k in range(10)]
    assert analysis["class_names"] == names and list(analysis["per_class"]) == names
    matrix = np.array(analysis["confusion_matrix"])
    assert matrix.shape == (10, 10)
    # rows are the true classes (the images of each folder), the diagonal the correct ones
    counts = [len(list((data / "val" / name).glob("*.png"))) for name in names]
    assert len(set(counts)) > 1  # uneven classes: rows and columns cannot be confused
    assert matrix.sum(axis=1).tolist() == counts and matrix.sum() == row["count"]
    assert np.trace(matrix) == round(row["top1"] * row["count"] / 100)
    for k, name in enumerate(names):
        cls = analysis["per_class"][name]
        assert (cls["count"], cls["correct"]) == (counts[k], matrix[k, k])
        assert cls["top1"] == pytest.approx(100 * matrix[k, k] / counts[k])
    worst = analysis["worst_mistakes"]
    assert worst and all(w["label"] != w["prediction"] for w in worst)
    assert [w["confidence"] for w in worst] == sorted((w["confidence"] for w in worst),
                                                       reverse=True)
    assert all(Path(w["path"]).parent.name == names[w["label"]] for w in worst)
    assert len(worst) == min(16, row["count"] - np.trace(matrix))
    # the plots are written next to the JSON results, and named in them and on screen
    for name in ("confusion_matrix", "worst_mistakes"):
        png = out.parent / f"{name}.png"
        assert result["artifacts"][name] == str(png)
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 200
        assert str(png) in printed
    worst_class = min(names, key=lambda n: analysis["per_class"][n]["top1"])
    assert "per-class top-1" in printed and worst_class in printed
    # --out DIR chooses their folder
    assert cli_main(["evaluate", "--checkpoint", str(assets.checkpoint), "--data", str(data),
                     "--image-size", str(DIGITS_SIZE), "--workers", "0", "--out",
                     str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()
