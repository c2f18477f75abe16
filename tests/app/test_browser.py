"""The page in a real browser: Debian's headless ``chromium`` (``apt-get install
chromium``), driven over the DevTools Protocol (tests/helpers/browser.py), loads the page,
uploads an image, and the top-1 the page shows is the one ``fastvit predict`` gives."""

from __future__ import annotations

import importlib.util

import pytest
from PIL import Image

from tests.app.conftest import classifier_file, launched, needs_gradio
from tests.helpers.browser import chromium, classify_in_page, headless_page
from tests.helpers.images import write_image

pytestmark = [needs_gradio, pytest.mark.skipif(importlib.util.find_spec("websockets") is None,
                                               reason="websockets is not installed")]




@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium is not on PATH: apt-get install "
                    "chromium (Debian/Ubuntu) to run the browser test")
def test_the_page_classifies_an_upload_in_chromium(tmp_path, shallow_t8):
    from fastvit.app import load_app_model
    from fastvit.deploy.predict import build_predictor, predict

    model_file = classifier_file(tmp_path / "t8.safetensors")
    image = write_image(tmp_path / "photo.png", size=(80, 100), seed=3)
    want = predict([image], build_predictor(checkpoint=model_file))[0]["predictions"][0]
    with launched(load_app_model(checkpoint=model_file)) as (blocks, _), \
            headless_page() as page:
        line = classify_in_page(page, blocks.local_url, image, tmp_path / "page.png")
    assert line == f"top-1: {want['label']} ({100 * want['probability']:.1f}%)"
    with Image.open(tmp_path / "page.png") as shot:
        assert shot.width >= 1000 and shot.height >= 600
