"""The Zero-shot and Search tabs through Gradio's client, on MobileCLIP2-S0 with random
weights at 64 px: the numbers ``fastvit zeroshot`` / ``search`` give, the photo folder
indexed once (cached beside the photos, reused), and only that folder served."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.app.conftest import SIZE, launched, needs_gradio
from tests.helpers.images import write_image, write_not_an_image

pytestmark = [needs_gradio, pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                                               reason="open_clip is not installed")]




@pytest.fixture(scope="module")
def clip_app(tmp_path_factory):
    from fastvit.app import load_app_model
    from tests.clip.conftest import reference, save_whole_model

    root = tmp_path_factory.mktemp("clip_app")
    weights = save_whole_model(reference("MobileCLIP2-S0"), root / "s0.safetensors", SIZE)
    photos = root / "photos"
    for i, colour in enumerate([(220, 30, 30), (30, 200, 40), (20, 40, 230)]):
        write_image(photos / f"p{i}.jpg", size=(48, 40), color=colour)
    write_not_an_image(photos / "nested" / "broken.jpg")
    model = load_app_model("MobileCLIP2-S0", weights)
    with launched(model, photos=photos) as (blocks, client):
        yield model, blocks, client, photos


def test_zeroshot_gives_the_probabilities_of_fastvit_zeroshot(clip_app):
    from gradio_client import handle_file

    from fastvit.clip import ZeroShotClassifier, classify

    model, _, client, photos = clip_app
    image = photos / "p0.jpg"
    label, status = client.predict(handle_file(str(image)), "red, green, blue",
                                   "a {} square.", api_name="/zeroshot")
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    want = classify([image], ZeroShotClassifier(model.model, ["red", "green", "blue"],
                                                "a {} square."))[0]["predictions"]
    assert set(got) == {"red", "green", "blue"}
    for row in want:
        assert got[row["label"]] == pytest.approx(row["probability"], abs=1e-4)
    assert f"**{want[0]['label']}**" in status


def test_empty_labels_are_a_message(clip_app):
    from gradio_client import handle_file

    status = clip_app[2].predict(handle_file(str(clip_app[3] / "p1.jpg")), " , ",
                                 "a photo of a {}.", api_name="/zeroshot")[-1]
    assert status.startswith("**Error:** no labels")


def test_photos_are_indexed_once_and_searched_by_text(clip_app):
    from fastvit.clip import read_index, search, text_query

    model, _, client, photos = clip_app
    status = client.predict(api_name="/index")
    cache = photos / ".fastvit-embeddings" / "MobileCLIP2-S0.safetensors"
    assert status.startswith("3 photos indexed, 1 unreadable left out") and cache.is_file()
    stamp = cache.stat().st_mtime_ns
    assert client.predict(api_name="/index").startswith("3 photos indexed")
    assert cache.stat().st_mtime_ns == stamp  # read back, not embedded again
    gallery, status = client.predict("a red square", 2, api_name="/search")
    want = search(read_index(cache), text_query(model.model, "a red square"), 2)
    assert [Path(item["image"]).name for item in gallery] == \
        [Path(hit["image"]).name for hit in want]
    assert [item["caption"].split()[0] for item in gallery] == \
        [f"{hit['score']:.3f}" for hit in want]
    assert status == "2 of 3 photos"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_only_the_photo_folder_is_served(clip_app):
    _, blocks, _, photos = clip_app
    base = blocks.local_url.rstrip("/")
    assert _get(f"{base}/gradio_api/file={(photos / 'p0.jpg').resolve()}") == 200
    assert _get(f"{base}/gradio_api/file={photos.parent / 's0.safetensors'}") == 403
    assert _get(f"{base}/gradio_api/file=/etc/passwd") == 403


def test_the_classify_tab_says_it_needs_a_classifier(clip_app):
    from gradio_client import handle_file

    status = clip_app[2].predict(handle_file(str(clip_app[3] / "p0.jpg")),
                                 api_name="/classify")[-1]
    assert "needs a classifier" in status and "MobileCLIP2-S0 (fastvit_mci0)" in status
