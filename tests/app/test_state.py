"""The one model of an app and the uploads it accepts, without a server."""

from __future__ import annotations

import pytest
import torch

from fastvit.app.state import UploadLimits, load_app_model, read_upload, task_of_checkpoint
from fastvit.errors import CheckpointError, ConfigError, DataError
from tests.app.conftest import classifier_file
from tests.helpers.images import write_image, write_not_an_image, write_truncated_jpeg


def test_an_upload_is_decoded_as_training_decodes(tmp_path):
    from fastvit.data import load_rgb

    path = write_image(tmp_path / "gray.png", mode="L", size=(30, 20))
    image = read_upload(path, UploadLimits())
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 20)
    assert torch.equal(image, load_rgb(path))


@pytest.mark.parametrize(("limits", "make", "message"), [
    (UploadLimits(), lambda p: write_not_an_image(p / "a.jpg"), "cannot read image a.jpg"),
    (UploadLimits(), lambda p: write_truncated_jpeg(p / "t.jpg"), "cannot read image t.jpg"),
    (UploadLimits(max_pixels=599), lambda p: write_image(p / "b.png", size=(20, 30)),
     "b.png is 30x20 = 600 pixels; this app takes at most 599 pixels (--max-pixels)"),
    (UploadLimits(max_bytes=100), lambda p: write_image(p / "c.png", size=(20, 30)),
     "c.png is 0.0 MB; this app takes images up to 0.0 MB (--max-upload-mb)"),
    (UploadLimits(), lambda p: None, "no image: upload one or pick an example"),
])
def test_a_bad_upload_is_one_data_error_naming_the_file(tmp_path, limits, make, message):
    path = make(tmp_path)
    with pytest.raises(DataError) as err:
        read_upload(path, limits)
    assert message in str(err.value) and str(tmp_path) not in str(err.value)


def test_limits_must_be_positive():
    with pytest.raises(ConfigError, match="positive"):
        UploadLimits(max_pixels=0)


def test_the_kind_of_a_checkpoint(tmp_path, shallow_t8):
    model = classifier_file(tmp_path / "t8.safetensors")
    assert task_of_checkpoint(model) is None
    not_a_run = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, not_a_run)
    assert task_of_checkpoint(not_a_run) is None
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        task_of_checkpoint(tmp_path / "nope.pt")


def test_a_fused_file_has_no_train_time_form(tmp_path, shallow_t8):
    from fastvit.app import inference
    from fastvit.checkpoints import save_checkpoint
    from fastvit.pipeline import load_model

    source = classifier_file(tmp_path / "t8.safetensors")
    fused = load_model(checkpoint=source, fold_bn=False)  # fused, in the layout files keep
    save_checkpoint(fused.model, tmp_path / "fused.safetensors", class_names=fused.class_names,
                    metadata={"pretrained_cfg": {"input_size": [3, 64, 64]}})
    app = load_app_model(checkpoint=tmp_path / "fused.safetensors")
    assert app.kind == "classifier" and app.model.train_time is None
    result = inference.classify(app.model, torch.zeros(3, 70, 90, dtype=torch.uint8),
                                repeats=1)
    assert "train_time_ms" not in result.latency and sum(result.top.values()) == \
        pytest.approx(1.0, abs=1e-5)
    assert "(the file holds fused weights)" in inference.format_latency(result.latency)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "no model: give --checkpoint FILE"),
    ({"checkpoint": "a.safetensors", "pretrained": "in1k"}, "not both"),
    ({"model": "fastvit_t8", "mano": "mano.npz"}, "--mano is for a hand checkpoint"),
])
def test_what_cannot_be_served_is_one_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_app_model(**kwargs)
