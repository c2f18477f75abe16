"""The page of ``fastvit app`` through Gradio's own client, on a small classifier: the
Classify tab against ``fastvit predict``'s numbers, a broken and a huge upload, every
other tab saying what it needs, and what the server serves."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import CLASSES, SIZE, classifier_file, launched, needs_gradio
from tests.helpers.images import write_image, write_not_an_image, write_truncated_jpeg

pytestmark = needs_gradio

MAX_PIXELS = 100_000


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app")
    return {"model": classifier_file(root / "t8.safetensors"),
            "photo": write_image(root / "photo.jpg", size=(80, 100), seed=3),
            "broken": write_not_an_image(root / "broken.jpg"),
            "truncated": write_truncated_jpeg(root / "truncated.jpg"),
            "huge": write_image(root / "huge.png", size=(400, 300), color=(9, 9, 9))}


@pytest.fixture(scope="module")
def app(files, shallow_t8):
    from fastvit.app import UploadLimits, load_app_model

    model = load_app_model(checkpoint=files["model"])
    with launched(model, limits=UploadLimits(max_pixels=MAX_PIXELS)) as (blocks, client):
        yield model, blocks, client


def upload(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_classify_shows_predicts_top5_input_and_both_latencies(app, files):
    from fastvit.app.inference import network_view
    from fastvit.deploy.predict import build_predictor, predict, read_image
    from fastvit.pipeline import eval_transform

    model, _, client = app
    label, seen, latency, status = client.predict(upload(files["photo"]), api_name="/classify")
    want = predict([files["photo"]], build_predictor(checkpoint=files["model"]))[0]
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert label["label"] == want["predictions"][0]["label"] in CLASSES
    for row in want["predictions"]:
        assert got[row["label"]] == pytest.approx(row["probability"], abs=1e-5)
    assert f"top-1: **{label['label']}**" in status
    shown = np.asarray(Image.open(seen))  # 64 px, each pixel shown as a 4 x 4 square
    assert shown.shape == (4 * SIZE, 4 * SIZE, 3)
    assert np.array_equal(shown, np.kron(shown[::4, ::4], np.ones((4, 4, 1), np.uint8)))
    cfg = model.model.loaded.cfg  # the eval transform's output, de-normalized
    x = eval_transform(cfg)(read_image(files["photo"]))
    assert np.array_equal(shown[::4, ::4], network_view(x, cfg))
    assert "train-time" in latency and "reparameterized" in latency and " ms " in latency
    assert "largest logit difference" in latency and model.model.train_time is not None


@pytest.mark.parametrize("name", ["broken", "truncated"])
def test_a_broken_upload_is_a_message(app, files, name):
    *outputs, status = app[2].predict(upload(files[name]), api_name="/classify")
    assert status.startswith("**Error:** cannot read image ") and f"{name}.jpg" in status
    assert outputs[1] is None and "Traceback" not in status


def test_a_huge_upload_is_refused_before_decoding(app, files):
    *_, status = app[2].predict(upload(files["huge"]), api_name="/classify")
    assert status == (f"**Error:** huge.png is 300x400 = 120,000 pixels; this app takes at "
                      f"most {MAX_PIXELS:,} pixels (--max-pixels)")


def test_no_upload_is_a_message(app):
    *_, status = app[2].predict(None, api_name="/classify")
    assert "no image" in status


@pytest.mark.parametrize(("api", "args", "needs"), [
    ("/detect", ("photo", 0.5), "a checkpoint of fastvit detect train"),
    ("/segment", ("photo",), "a checkpoint of fastvit segment train"),
    ("/hand", ("photo",), "the MANO model"),
    ("/zeroshot", ("photo", "cat, dog", "a photo of a {}."), "a MobileCLIP model"),
    ("/search", ("a dog", 3), "a MobileCLIP model"),
])
def test_every_other_tab_says_what_it_needs(app, files, api, args, needs):
    args = [upload(files[a]) if a in files else a for a in args]
    status = app[2].predict(*args, api_name=api)[-1]
    assert needs in status and "This app serves fastvit_t8 (a classifier" in status


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_serves_no_file_of_the_machine(app, files):
    _, blocks, _ = app
    base = blocks.local_url.rstrip("/")
    assert base.startswith("http://127.0.0.1:")
    for path in ("/etc/passwd", str(files["photo"]), str(Path.cwd() / "pyproject.toml")):
        assert _get(f"{base}/gradio_api/file={path}") == 403, path
    assert _get(base + "/") == 200
