"""The Detect, Segment and Hand tabs through Gradio's client, each on an untrained task
checkpoint (T8 cut to one block per stage, tiny heads, 64 px): the drawing the matching
``predict`` command writes, shown in the page; and the other tabs of such an app saying
what they need."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.app.conftest import launched, needs_gradio
from tests.helpers.images import write_image, write_not_an_image

pytestmark = [needs_gradio, pytest.mark.skipif(importlib.util.find_spec("pycocotools") is None,
                                               reason="pycocotools is not installed")]



DET = {"model.variant": "fastvit_t8", "data.min_size": 64, "data.max_size": 64,
       "head.fpn_channels": 32, "head.box_dim": 64, "head.mask_channels": 16,
       "head.rois_per_image": 32, "head.rpn_proposals_test": 20}
SEG = {"model.variant": "fastvit_t8", "model.num_classes": 3, "data.crop_size": 64,
       "data.base_size": 64, "head.fpn_channels": 32, "head.channels": 16}
HAND = {"model.variant": "fastvit_t8", "data.image_size": 64, "head.hidden": 32}


def _recipe(kind: str):
    from fastvit.tasks.recipes import load_task_recipe

    if kind == "detection":
        from fastvit.tasks.detection.recipe import DEFAULT_RECIPE, DetectionRecipe

        return load_task_recipe(DetectionRecipe, DEFAULT_RECIPE, values=DET)
    if kind == "segmentation":
        from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE, SegmentationRecipe

        return load_task_recipe(SegmentationRecipe, DEFAULT_RECIPE, values=SEG)
    from fastvit.tasks.hand.recipe import DEFAULT_RECIPE, HandRecipe

    return load_task_recipe(HandRecipe, DEFAULT_RECIPE, values=HAND)


def untrained_checkpoint(kind: str, path: Path) -> Path:
    """A run checkpoint of ``kind``'s untrained model (the layout of earlier releases,
    which every loader still reads)."""
    from fastvit.run.recipes import to_dict

    recipe = _recipe(kind)
    torch.manual_seed(1)
    extra: dict = {}
    if kind == "detection":
        from fastvit.tasks.detection.engine import build_detector

        model = build_detector(recipe, 2, with_pretrained=False)
        extra = {"class_names": ["square", "disc"], "category_ids": [3, 7]}
    elif kind == "segmentation":
        from fastvit.tasks.segmentation.engine import build_segmenter

        model = build_segmenter(recipe, with_pretrained=False)
    else:
        from fastvit.tasks.hand.engine import build_net

        model = build_net(recipe)
    torch.save({"task": kind, "recipe": to_dict(recipe), "step": 0, "extra": extra,
                "model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, shallow_t8) -> dict[str, Path]:
    from tests.helpers.hand import write_mano_npz

    root = tmp_path_factory.mktemp("tasks_app")
    out = {kind: untrained_checkpoint(kind, root / f"{kind}.pt")
           for kind in ("detection", "segmentation", "hand")}
    out["mano"] = write_mano_npz(root / "mano_right.npz")
    out["photo"] = write_image(root / "photo.jpg", size=(64, 64), seed=5)
    out["broken"] = write_not_an_image(root / "broken.jpg")
    return out


def _upload(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


@pytest.mark.parametrize("kind", ["detection", "segmentation", "hand"])
def test_each_task_tab_shows_the_drawing_of_its_predict_command(files, kind, tmp_path):
    from fastvit.app import load_app_model

    app = load_app_model(checkpoint=files[kind],
                         mano=files["mano"] if kind == "hand" else None)
    assert app.kind == kind
    with launched(app) as (_, client):
        if kind == "detection":
            from fastvit.tasks.detection.predict import predict_detections

            drawing, boxes, status = client.predict(_upload(files["photo"]), 0.0,
                                                    api_name="/detect")
            want = predict_detections(app.model, [files["photo"]], tmp_path,
                                      score_threshold=0.0, log=lambda _: None)[0]
            assert status == f"{len(want['detections'])} objects"
            assert boxes == want["detections"]
            expected = tmp_path / "photo.png"
        elif kind == "segmentation":
            from fastvit.tasks.segmentation.predict import predict_label_maps

            drawing, status = client.predict(_upload(files["photo"]), api_name="/segment")
            want = predict_label_maps(app.model, [files["photo"]], tmp_path, overlay=True,
                                      log=lambda _: None)[0]
            assert status == f"classes present: {', '.join(map(str, want['classes']))}"
            expected = tmp_path / "photo_overlay.png"
        else:
            from fastvit.tasks.hand.predict import predict_hand_meshes

            drawing, joints, status = client.predict(_upload(files["photo"]),
                                                     api_name="/hand")
            want = predict_hand_meshes(app.model, [files["photo"]], tmp_path, batch_size=1,
                                       workers=0, num_examples=1)[0]
            assert np.allclose(joints["joints_3d"], want["joints_3d"], atol=1e-6)
            expected = tmp_path / "examples.png"
        got, ref = _pixels(drawing), _pixels(expected)
        assert got.shape == ref.shape and np.array_equal(got, ref)  # PNG: lossless
        broken = client.predict(_upload(files["broken"]), *([0.5] if kind == "detection"
                                                              else []),
                                api_name={"detection": "/detect", "segmentation": "/segment",
                                          "hand": "/hand"}[kind])[-1]
        assert broken.startswith("**Error:** cannot read image broken.jpg")
        wrong = client.predict(_upload(files["photo"]), api_name="/classify")[-1]
        assert "The Classify tab needs a classifier" in wrong and kind in wrong


def test_a_hand_checkpoint_without_mano_is_one_clear_error(files):
    from fastvit.app import load_app_model
    from fastvit.errors import ConfigError

    with pytest.raises(ConfigError, match="hand-mesh checkpoint: give the MANO model too"):
        load_app_model(checkpoint=files["hand"])
