"""A missing optional dependency is one line naming the extra to install, at every place
fastvit imports one. Each import is made to fail by hiding the package from
``sys.modules`` (an entry of None makes ``import`` raise ImportError)."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from fastvit.errors import FastVitError
from fastvit.extras import EXTRAS, MissingExtraError, install_hint, require


def _hide(monkeypatch, *packages: str, reload: tuple[str, ...] = ()) -> None:
    """Make ``import PACKAGE`` fail, and forget ``reload`` modules so they import anew."""
    for name in list(sys.modules):
        if name.split(".")[0] in packages or name.startswith(reload):
            monkeypatch.delitem(sys.modules, name)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_require_names_the_package_and_the_extra(monkeypatch, module):
    _hide(monkeypatch, module)
    with pytest.raises(MissingExtraError) as err:
        require(module, "some feature")
    pip_name = {"sklearn": "scikit-learn", "onnx_ir": "onnx-ir",
                "open_clip": "open_clip_torch", "mlflow": "mlflow-skinny"}.get(module, module)
    assert str(err.value) == (f"some feature needs {pip_name}: "
                              f"pip install 'fastvit[{EXTRAS[module]}]'")
    assert isinstance(err.value, FastVitError) and isinstance(err.value, ImportError)
    assert install_hint("timm") == "pip install timm"  # outside every extra: its own name
    assert install_hint("huggingface_hub", "hub") == "pip install 'fastvit[hub]'"


def test_detect_without_pycocotools_is_one_cli_line(monkeypatch, tmp_path, capsys):
    from fastvit.cli import main

    _hide(monkeypatch, "pycocotools", reload=("fastvit.tasks.detection",))
    code = main(["detect", "evaluate", "--checkpoint", str(tmp_path / "run"), "--data",
                 str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("fastvit detect: error: fastvit detect needs pycocotools: "
                   "pip install 'fastvit[tasks]'\n")


def test_onnx_runtime_onnx_and_onnxscript(monkeypatch, tmp_path):
    from fastvit.deploy import onnx_export, onnx_runtime
    from fastvit.factory import create_model

    _hide(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError, match=r"needs onnxruntime: pip install "
                       r"'fastvit\[export\]'"):
        onnx_runtime.ort_session(tmp_path / "model.onnx")
    _hide(monkeypatch, "onnx")
    with pytest.raises(MissingExtraError, match=r"reading ONNX files needs onnx: "):
        onnx_runtime.read_onnx_metadata(tmp_path / "model.onnx")
    monkeypatch.undo()
    _hide(monkeypatch, "onnxscript")
    model = create_model("fastvit_t8", num_classes=2).eval()
    with pytest.raises(MissingExtraError, match=r"^ONNX export needs onnxscript: pip install "
                       r"'fastvit\[export\]'$"):
        onnx_export.export_onnx(model, tmp_path / "t8.onnx", image_size=32)
    assert not (tmp_path / "t8.onnx").exists()


def test_int8_quantization_without_onnxruntime(monkeypatch):
    _hide(monkeypatch, "onnxruntime", reload=("fastvit.deploy.quantize",))
    with pytest.raises(MissingExtraError, match=r"^int8 quantization needs onnxruntime"):
        import fastvit.deploy.quantize  # noqa: F401


def test_core_ml_without_coremltools(monkeypatch):
    from fastvit.deploy.coreml import _import_coremltools

    _hide(monkeypatch, "coremltools")
    with pytest.raises(MissingExtraError, match=r"^Core ML export needs coremltools: pip "
                       r"install 'fastvit\[export\]'$"):
        _import_coremltools()


def test_hand_without_smplx(monkeypatch):
    from fastvit.tasks.hand.mano import axis_angle_to_matrix

    _hide(monkeypatch, "smplx")
    with pytest.raises(MissingExtraError, match=r"^fastvit hand needs smplx: pip install "
                       r"'fastvit\[tasks\]'$"):
        axis_angle_to_matrix(torch.zeros(1, 3))


def test_digits_without_scikit_learn(monkeypatch, capsys):
    from fastvit.cli import main

    _hide(monkeypatch, "sklearn")
    assert main(["train", "--data", "digits", "--out", "unused", "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "the digits dataset (--data digits) needs scikit-learn: pip install 'fastvit[train]'")


def test_training_without_tensorboard_says_so_and_goes_on(monkeypatch, tmp_path, caplog):
    from fastvit.run.metrics_log import MetricsLogger

    _hide(monkeypatch, "tensorboard")
    with caplog.at_level(logging.INFO, logger="fastvit"):
        logger = MetricsLogger(tmp_path)
        logger.log({"kind": "train", "step": 1, "loss": 1.0})
        logger.close()
    assert ("TensorBoard logs needs tensorboard: pip install 'fastvit[train]' (metrics.jsonl "
            "is written anyway)") in caplog.text
    assert (tmp_path / "metrics.jsonl").is_file() and not (tmp_path / "tensorboard").exists()
