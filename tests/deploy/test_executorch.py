"""ExecuTorch export: the ``.pte`` file run in ``executorch.runtime`` against eager
(the dynamic-batch round trip: ``test_all_formats``).

fp32: max |diff| <= 1e-4 (measured ~1e-8); int8 (PT2E, XNNPACK quantizer), one
quantization shared by this module's int8 tests: top-1 agreement with the fp32 ``.pte``
>= 80% on the held-out digits (measured 99.0%), top-1 within 1 point of fp32 (measured
88.9% fp32, 88.5% int8), and the report recomputed from the files' predictions.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from fastvit.cli import main as cli
from fastvit.deploy.executorch_export import (
    export_executorch,
    pte_runner,
    quantize_executorch_int8,
    read_pte_metadata,
)
from fastvit.deploy.export import export_model
from fastvit.deploy.metadata import export_metadata
from fastvit.deploy.verification import ExportVerificationError
from fastvit.models import (
    VARIANTS,
    FastVit,
    fold_batchnorms,
    randomize_model_stats,
    reparameterize,
)
from fastvit.pipeline import load_model
from tests.deploy.test_export import normalize
from tests.deploy.test_quantize import check_report_describes_the_files, int8_cli
from tests.helpers.digits import DIGITS_SIZE, digits_assets
from tests.helpers.shallow import one_block_per_stage_fused, one_block_per_stage_spec

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="pip install 'fastvit[executorch]'")


@needs_executorch
@pytest.mark.slow
def test_raw_pixels_and_metadata_through_export_model(tmp_path) -> None:
    # the digits weights' class names and normalization, on fastvit_t8 at one block per
    # stage (the lowering of the full depth: the int8 fixture below)
    assets = digits_assets()
    loaded = load_model(checkpoint=assets.checkpoint)
    shallow = FastVit(one_block_per_stage_spec("fastvit_t8"), num_classes=10)
    randomize_model_stats(shallow, seed=3)
    loaded = dataclasses.replace(loaded, model=fold_batchnorms(reparameterize(shallow)).eval())
    result = export_model(loaded, "executorch", tmp_path / "raw.pte", image_size=64,
                          raw_pixels=True)
    assert result.path.suffix == ".pte" and "ExecuTorch" in result.description
    assert result.verification.max_abs_diff <= 1e-4
    meta = read_pte_metadata(result.path)
    assert meta["fastvit.input"] == "raw_pixels_0_255"
    assert json.loads(meta["fastvit.class_names"]) == assets.class_names
    raw = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        expected = loaded.model(normalize(raw))
    got = pte_runner(result.path)(raw)[0]
    assert (got - expected).abs().max() / expected.abs().max() < 1e-4


@needs_executorch
@pytest.mark.slow
def test_features_only_backbone_exports(tmp_path, capsys, monkeypatch) -> None:
    # one block per stage: the same four feature maps (depth adds no layer kind)
    monkeypatch.setitem(VARIANTS, "fastvit_t8", one_block_per_stage_spec("fastvit_t8"))
    out = tmp_path / "backbone.pte"
    assert cli(["export", "--model", "fastvit_t8", "--features-only", "--format", "executorch",
                "--image-size", "64", "--output", str(out)]) == 0
    shapes = [tuple(f.shape) for f in pte_runner(out)(torch.randn(1, 3, 64, 64))]
    assert shapes == [(1, 48, 16, 16), (1, 96, 8, 8), (1, 192, 4, 4), (1, 384, 2, 2)]
    assert "verified: max |diff|" in capsys.readouterr().out


@needs_executorch
@pytest.mark.slow
def test_failed_verification_writes_nothing(tmp_path, monkeypatch) -> None:
    """The check and the temporary file around it; here the "file" is placeholder bytes and
    its runner eager plus an error (lowering is the other tests')."""
    import fastvit.deploy.executorch_export as et

    model = one_block_per_stage_fused("fastvit_t8")
    ran: list[Path] = []

    def wrong_runner(path):
        ran.append(Path(path))
        assert Path(path).read_bytes() == b"pte bytes"  # the written file is what is run
        return lambda x: [model(x) + 1e-3]

    monkeypatch.setattr(et, "lower_to_pte", lambda program, meta=None: b"pte bytes")
    monkeypatch.setattr(et, "pte_runner", wrong_runner)
    with pytest.raises(ExportVerificationError, match=r"ExecuTorch output differs"):
        export_executorch(model, tmp_path / "t8.pte", image_size=64)
    assert ran and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def pte_int8(tmp_path_factory) -> tuple[Path, dict, str]:
    if importlib.util.find_spec("executorch") is None:
        pytest.skip("pip install 'fastvit[executorch]'")
    return int8_cli("executorch", tmp_path_factory.mktemp("pte_int8"), "--min-agreement", "0.8")


@pytest.mark.slow
def test_int8_pte_keeps_fp32_top1_on_labelled_digits(pte_int8) -> None:
    out, report, printed = pte_int8
    print(printed)  # the measured report: `pytest -s -k keeps_fp32_top1 tests/deploy`
    assert report["calibration_images"] == 60 and report["images"] >= 250
    assert report["top1_agreement"] >= 0.80 and report["fp32_top1"] >= 0.80
    assert abs(report["top1_difference"]) <= 0.01  # within 1 point (measured -0.3)
    int8 = out.with_name("digits.int8.pte")
    assert report["int8"] == str(int8)
    # int8 weights: the file is a fraction of the fp32 one (4 bytes -> 1 per weight)
    assert int8.stat().st_size < 0.4 * out.stat().st_size
    assert "PT2E" in read_pte_metadata(int8)["fastvit.quantization"]
    assert "top-1 agreement with fp32" in printed


@pytest.mark.slow
def test_reported_agreement_is_what_the_files_predict(pte_int8) -> None:
    out, report, _ = pte_int8
    fp32, int8 = pte_runner(out), pte_runner(report["int8"])
    check_report_describes_the_files(report, lambda x: fp32(x)[0], lambda x: int8(x)[0])


@pytest.mark.slow
def test_int8_min_agreement_failure_writes_nothing(pte_int8, tmp_path, monkeypatch) -> None:
    """The gate and the temporary file around it; the quantization itself is the fixture's
    (here the "int8" program is the fp32 file again: agreement 100%, still below 101%)."""
    import fastvit.deploy.executorch_export as et

    out, _, _ = pte_int8
    fp32 = tmp_path / "d.pte"
    shutil.copy(out, fp32)  # the verified fp32 file
    monkeypatch.setattr(et, "quantize_pt2e", lambda *args, **kwargs: None)
    monkeypatch.setattr(et, "lower_to_pte", lambda program, meta=None: fp32.read_bytes())
    assets = digits_assets()
    loaded = load_model(checkpoint=assets.checkpoint)
    with pytest.raises(ExportVerificationError, match="below --min-agreement 101.0%"):
        quantize_executorch_int8(
            loaded, loaded.model, fp32, assets.calibration, image_size=DIGITS_SIZE,
            metadata=export_metadata(loaded, DIGITS_SIZE, raw_pixels=False),
            calibration_size=10, min_agreement=1.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pte"]


def test_missing_executorch_is_one_line_naming_the_install(tmp_path, monkeypatch,
                                                            capsys) -> None:
    monkeypatch.setitem(sys.modules, "executorch.exir", None)  # import fails
    assert cli(["export", "--model", "fastvit_t8", "--format", "executorch",
                "--output", str(tmp_path / "x.pte")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit export: error:") and "pip install 'fastvit[executorch]'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.pte").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "torchscript", "--int8", "--calibration", "x"],
     "--format torchscript has no --int8"),
    (["--format", "onnx", "--features-only", "--int8", "--calibration", "x"],
     "not --features-only"),
])
def test_int8_option_errors(tmp_path, capsys, argv, message) -> None:
    argv = ["export", "--model", "fastvit_t8", "--output", str(tmp_path / "x.pte"), *argv]
    if "--format" not in argv:
        argv += ["--format", "executorch"]
    assert cli(argv) == 2
    assert message in capsys.readouterr().err
