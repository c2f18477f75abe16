"""``export_model`` and ``fastvit export``: baked normalization, BatchNorm folding, the
Core ML image classifier, a failed check writing nothing, and the command's errors
(the formats' round trips: ``test_all_formats``; int8: ``test_quantize``).

Tolerances: exact graph rewrites (BN fold, baked normalization) <= 1e-5 relative to the
output scale (1e-4 for the raw 0-255 input, whose values are 255x larger); ONNX Runtime
vs eager <= 1e-4.
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch

import fastvit
from fastvit.cli import main as cli
from fastvit.deploy.normalization import bake_normalization
from fastvit.deploy.onnx_export import export_onnx
from fastvit.deploy.onnx_runtime import ort_session, read_onnx_metadata
from fastvit.deploy.verification import ExportVerificationError
from fastvit.models import fold_batchnorms
from fastvit.pipeline import load_model
from tests.helpers.digits import digits_assets

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fused_randomized(name: str, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and layer scales BEFORE fusing (fresh ones hide folding bugs)."""
    model = fastvit.create_model(name)
    fastvit.randomize_model_stats(model, seed=seed)
    return fold_batchnorms(fastvit.reparameterize(model))


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def normalize(raw: torch.Tensor) -> torch.Tensor:
    return (raw / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------
# Exact graph rewrites
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_fold_batchnorms_removes_every_batchnorm_exactly(name: str) -> None:
    model = fastvit.randomize_model_stats(fastvit.create_model(name), seed=3)
    fused = fastvit.reparameterize(model)
    folded = fold_batchnorms(copy.deepcopy(fused))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert fastvit.max_abs_difference(fused, folded, (2, 3, 64, 64), relative=True) < 1e-5


def naive_fold(fused: torch.nn.Module) -> torch.nn.Module:
    """The tempting but wrong fold: mean into the bias, conv padding left at zero."""
    model = copy.deepcopy(fused)
    conv = model.stem[0].reparam_conv
    scale = 1 / (255 * torch.tensor(STD))
    shift = -torch.tensor(MEAN) / torch.tensor(STD)
    with torch.no_grad():
        conv.bias += (conv.weight * shift.view(1, 3, 1, 1)).sum((1, 2, 3))
        conv.weight *= scale.view(1, 3, 1, 1)
    return model


def test_baked_normalization_on_raw_pixels_equals_normal_pipeline() -> None:
    fused = fused_randomized("fastvit_t8")
    baked = bake_normalization(fused, MEAN, STD)
    raw = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = fused(normalize(raw))
        got = baked(raw)
        # The check is sensitive to the border: folding the mean into the bias is exact
        # in the interior but wrong where the conv zero-pads, and must fail this check.
        wrong = naive_fold(fused)(raw)
    assert relative_diff(expected, got) < 1e-4
    assert relative_diff(expected, wrong) > 1e-3
    # the first conv's output agrees with the naive fold away from the 1-pixel border only
    stem_conv = fused.stem[0].reparam_conv
    with torch.no_grad():
        exact_map = stem_conv(normalize(raw))
        naive_map = naive_fold(fused).stem[0].reparam_conv(raw)
    interior = (exact_map - naive_map)[..., 1:, 1:].abs().max()
    border = (exact_map - naive_map)[..., 0, :].abs().max()
    assert interior < 1e-3 < border


def test_bake_normalization_without_mean_subtraction_is_for_a_preprocessing_bias() -> None:
    fused = fused_randomized("fastvit_t8", seed=2)
    baked = bake_normalization(fused, MEAN, STD, subtract_mean=False)
    raw = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        got = baked(raw - 255 * torch.tensor(MEAN).view(1, 3, 1, 1))
        assert relative_diff(fused(normalize(raw)), got) < 1e-4


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_failed_verification_writes_nothing(tmp_path, monkeypatch) -> None:
    import fastvit.deploy.onnx_export as export

    real = export.ort_runner
    monkeypatch.setattr(export, "ort_runner", lambda s: (lambda x: [
        o + 1e-3 for o in real(s)(x)]))
    path = tmp_path / "t8.onnx"
    with pytest.raises(ExportVerificationError, match=r"max \|diff\| = 0.001 > 0.0001"):
        export_onnx(fused_randomized("fastvit_t8"), path, image_size=64)
    assert list(tmp_path.iterdir()) == []


def coreml_spec(path):
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def coreml_input_bias(spec) -> list[float]:
    """Values of the constant Core ML adds to the image (its preprocessing ``bias``)."""
    main = spec.mlProgram.functions["main"]
    ops = main.block_specializations[main.opset].operations
    consts = {op.outputs[0].name: op for op in ops if op.type == "const"}
    for op in ops:
        if op.type == "add" and op.inputs["x"].arguments[0].name == "image":
            const = consts[op.inputs["y"].arguments[0].name]
            return list(const.attributes["val"].immediateValue.tensor.floats.values)
    raise AssertionError("no preprocessing add on the image input")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside coremltools
@pytest.mark.slow
def test_coreml_image_classifier_spec(tmp_path, caplog) -> None:
    from fastvit.deploy.coreml import coreml_network, export_coreml

    dm = load_model("fastvit_t8")
    path = tmp_path / "t8.mlpackage"
    with caplog.at_level(logging.INFO, logger="fastvit"):
        assert export_coreml(dm, path, image_size=64, image_input=True) is None  # Linux
    assert "prediction check skipped" in caplog.text
    spec = coreml_spec(path)
    assert spec.WhichOneof("Type") == "mlProgram"
    (image,) = spec.description.input
    assert image.name == "image" and image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (64, 64)
    assert image.type.imageType.colorSpace == image.type.imageType.RGB
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs"]
    assert spec.description.predictedFeatureName == "classLabel"
    assert np.allclose(coreml_input_bias(spec), [-255 * m for m in MEAN], atol=1e-3)
    # What Core ML converts: (raw - 255 mean) -> probabilities == softmax(model(normalized))
    network, classifier = coreml_network(dm, image_input=True)
    raw = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        got = network(raw - 255 * torch.tensor(MEAN).view(1, 3, 1, 1))
        expected = dm.model(normalize(raw)).softmax(1)
    assert classifier and relative_diff(expected, got) < 1e-4


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_exports_checkpoint_with_raw_pixels(tmp_path) -> None:
    assets = digits_assets()
    out = tmp_path / "raw.onnx"
    assert cli(["export", "--model", "fastvit_t8", "--checkpoint", str(assets.checkpoint),
                "--format", "onnx", "--raw-pixels", "--image-size", "64",
                "--output", str(out)]) == 0
    meta = read_onnx_metadata(out)
    assert meta["fastvit.input"] == "raw_pixels_0_255"
    assert json.loads(meta["fastvit.class_names"]) == assets.class_names
    dm = load_model(checkpoint=assets.checkpoint)
    raw = torch.rand(1, 3, 64, 64) * 255
    got = ort_session(out).run(None, {"input": raw.numpy()})[0]
    with torch.no_grad():
        expected = dm.model(normalize(raw)).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


@pytest.mark.parametrize(("argv", "message"), [
    (["--checkpoint", "{missing}"], "checkpoint not found"),
    pytest.param(["--checkpoint", "{digits}", "--model", "fastvit_sa12"],
                 "holds fastvit_t8 weights", marks=pytest.mark.slow),  # fits the digits model
    (["--int8"], "--int8 needs --calibration"),
    (["--format", "coreml", "--dynamic-batch"], "Core ML export is batch 1"),
    (["--image-size", "16"], "--image-size must be >= 32"),
])
def test_cli_bad_input_is_one_clear_error(tmp_path, capsys, argv, message) -> None:
    fill = {"{missing}": str(tmp_path / "nope.safetensors")}
    if "{digits}" in argv:
        fill["{digits}"] = str(digits_assets().checkpoint)
        capsys.readouterr()  # what training the shared digits model printed, if it ran here
    argv = [fill.get(a, a) for a in argv]
    base = {"--model": "fastvit_t8", "--format": "onnx", "--output": str(tmp_path / "x.onnx")}
    for key, value in base.items():
        if key not in argv:
            argv += [key, value]
    assert cli(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit export: error:") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_unknown_format_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["export", "--model", "fastvit_t8", "--format", "tflite"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
