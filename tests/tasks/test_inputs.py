"""``fastvit.tasks.inputs``: what the task ``predict`` commands run on, and output names."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastvit.errors import ConfigError, DataError
from fastvit.tasks.inputs import input_images, output_stems
from tests.helpers.images import write_image


def test_files_folders_and_globs(tmp_path: Path) -> None:
    one = write_image(tmp_path / "one.png")
    photos = tmp_path / "photos"
    nested = [write_image(photos / "b.jpg"), write_image(photos / "sub" / "a.png")]
    (photos / "notes.txt").write_text("not an image")
    globbed = write_image(tmp_path / "more" / "c.jpg")
    found = input_images([one, photos, str(tmp_path / "more" / "*.jpg")])
    assert found == [one, *sorted(nested), globbed]


def test_nothing_to_predict_on_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images in folder .*empty"):
        input_images([tmp_path / "empty"])
    with pytest.raises(DataError, match=r"no images in pattern '.*\*\.jpg'"):
        input_images([str(tmp_path / "*.jpg")])
    with pytest.raises(DataError, match="image not found: .*missing.png"):
        input_images([tmp_path / "missing.png"])
    with pytest.raises(ConfigError, match="image files, folders or glob patterns"):
        input_images([])


def test_output_names_stay_distinct(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "b" / "y.jpg"]
    assert output_stems(paths) == ["a__x", "b__x", "y"]
    assert output_stems(paths[1:]) == ["x", "y"]
