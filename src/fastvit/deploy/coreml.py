"""Core ML export (mlprogram) of a fused FastViT, the paper's mobile deployment path.

With ``image_input`` the model takes an RGB image of raw 0-255 pixels: Core ML's
image preprocessing subtracts the mean pixel (its per-channel ``bias``) and the
``1 / (255 * std)`` scale is folded into the stem's first fused convolution
(:func:`fastvit.deploy.normalization.bake_normalization`), which keeps the convolution's zero
padding exact. With class names the model is a Core ML classifier (softmax
probabilities + top label). Conversion goes through ``torch.export``.

Core ML can only *run* a model on macOS; elsewhere the conversion is done and
the prediction check is skipped with a printed reason.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastvit.deploy.formats import ExportFormat, ExportJob, scientific
from fastvit.deploy.normalization import bake_normalization
from fastvit.deploy.verification import (
    Verification,
    check_tolerance,
    example_input,
    output_names,
)
from fastvit.errors import ConfigError
from fastvit.extras import require
from fastvit.labels import unique_labels
from fastvit.pipeline import Loaded

log = logging.getLogger(__name__)

COREML_FP32_TOLERANCE = 1e-4  # probabilities / logits, fp32 compute
COREML_FP16_TOLERANCE = 2e-2  # fp16 compute: ~3 significant digits
IMAGE_INPUT, TENSOR_INPUT, LABEL_NAME = "image", "input", "classLabel"
COREML_PRECISIONS = ("fp16", "fp32")


def coreml_can_predict() -> tuple[bool, str]:
    """Whether Core ML models can run here, and why not."""
    if sys.platform != "darwin":
        return False, f"Core ML runs models on macOS only (this is {platform.system()})"
    return True, ""


def _import_coremltools():
    # coremltools logs version-compatibility notices at import; they are not actionable here.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return require("coremltools", "Core ML export")


class _Probabilities(nn.Module):
    """Logits -> softmax probabilities (a Core ML classifier reports probabilities)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def coreml_network(loaded: Loaded, image_input: bool, classifier: bool = True
                   ) -> tuple[nn.Module, bool]:
    """The PyTorch module Core ML converts, and whether it is a classifier."""
    model: nn.Module = loaded.model
    if image_input:  # the image's mean is subtracted by Core ML's preprocessing bias
        model = bake_normalization(model, loaded.cfg["mean"], loaded.cfg["std"], 255.0,
                                   subtract_mean=False)
    classifier = (classifier and loaded.labels is not None
                  and not getattr(loaded.model, "features_only", False))
    return (_Probabilities(model) if classifier else model).eval(), classifier


def _save_package(mlmodel, path: Path, check=None):
    """Save the ``.mlpackage`` folder atomically: build it aside, run ``check(tmp)``
    on it, then swap it in. Returns what ``check`` returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp{os.getpid()}.mlpackage"
    old = path.parent / f".{path.stem}.old{os.getpid()}.mlpackage"
    try:
        mlmodel.save(str(tmp))
        result = check(tmp) if check is not None else None
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return result


def export_coreml(loaded: Loaded, path: str | Path, *, image_size: int,
                  image_input: bool = False, precision: str = "fp16",
                  metadata: dict[str, str] | None = None,
                  classifier: bool = True) -> Verification | None:
    """Convert the fused model to a Core ML mlprogram ``.mlpackage`` (batch 1).

    With class labels and ``classifier`` the model is a Core ML classifier
    (probabilities + top label), else it outputs logits / feature maps.
    Returns the prediction check on macOS, ``None`` elsewhere (reason logged).
    """
    ct = _import_coremltools()
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"a Core ML mlprogram is a .mlpackage folder, got {path}")
    network, classifier = coreml_network(loaded, image_input, classifier)
    shape = (1, 3, image_size, image_size)
    example = example_input(1, image_size, raw_pixels=image_input)
    if image_input:
        bias = [-255.0 * m for m in loaded.cfg["mean"]]
        inputs = [ct.ImageType(name=IMAGE_INPUT, shape=shape, scale=1.0, bias=bias,
                               color_layout=ct.colorlayout.RGB)]
    else:  # float32 in, whatever the compute precision, like the ONNX export
        inputs = [ct.TensorType(name=TENSOR_INPUT, shape=shape, dtype=np.float32)]
    kwargs = {}
    if classifier:
        kwargs["classifier_config"] = ct.ClassifierConfig(unique_labels(loaded.labels),
                                                          predicted_feature_name=LABEL_NAME)
    else:
        kwargs["outputs"] = [ct.TensorType(name=n) for n in output_names(loaded.model)]
    with torch.no_grad():
        program = torch.export.export(network, (example,)).run_decompositions({})
    mlmodel = ct.convert(program, inputs=inputs, convert_to="mlprogram",
                         compute_precision=(ct.precision.FLOAT16 if precision == "fp16"
                                            else ct.precision.FLOAT32),
                         minimum_deployment_target=ct.target.iOS16, **kwargs)
    mlmodel.short_description = (f"FastViT {loaded.variant} (fused), {image_size}x{image_size} "
                                 f"{'RGB image, 0-255' if image_input else 'normalized tensor'}")
    mlmodel.input_description[IMAGE_INPUT if image_input else TENSOR_INPUT] = (
        "RGB image; ImageNet normalization is built in" if image_input
        else "ImageNet-normalized float tensor, NCHW")
    meta = {k: v for k, v in (metadata or {}).items() if k != "fastvit.class_names"}
    mlmodel.user_defined_metadata.update(meta)
    can, why = coreml_can_predict()
    if not can:
        _save_package(mlmodel, path)
        log.info("Core ML prediction check skipped: %s", why)
        return None
    labels = unique_labels(loaded.labels) if classifier else None
    return _save_package(mlmodel, path, lambda tmp: verify_coreml(
        tmp, network, example, image_input, labels, precision))


def verify_coreml(path: Path, network: nn.Module, example: torch.Tensor, image_input: bool,
                  labels: list[str] | None, precision: str
                  ) -> Verification:  # pragma: no cover - macOS
    """Run the saved package with Core ML and compare with PyTorch (macOS only)."""
    from PIL import Image

    ct = _import_coremltools()
    mlmodel = ct.models.MLModel(str(path))
    if image_input:
        pixels = example[0].round().clamp(0, 255).to(torch.uint8)
        example = pixels.float().unsqueeze(0)
        feed = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    else:
        feed = example.numpy()
    out = mlmodel.predict({IMAGE_INPUT if image_input else TENSOR_INPUT: feed})
    with torch.no_grad():
        expected = network(example)[0]
    if labels is not None:
        probs = next(v for v in out.values() if isinstance(v, dict))
        got = torch.tensor([probs[label] for label in labels])
    else:
        got = torch.as_tensor(np.asarray(next(iter(out.values()))))[0]
    diff = float((got.float() - expected.float()).abs().max())
    tolerance = COREML_FP16_TOLERANCE if precision == "fp16" else COREML_FP32_TOLERANCE
    return check_tolerance("Core ML", diff, tolerance, (1,))


def _export(job: ExportJob) -> Verification | None:
    if job.coreml_precision not in COREML_PRECISIONS:
        raise ConfigError(f"Core ML precision must be fp16 or fp32, got {job.coreml_precision!r}")
    return export_coreml(job.loaded, job.path, image_size=job.image_size,
                         image_input=job.image_input, precision=job.coreml_precision,
                         metadata=job.metadata)


FORMAT = ExportFormat(
    name="coreml", title="Core ML mlprogram", suffix=".mlpackage", extra="export",
    requires=("coremltools",),
    verified_by="prediction on macOS only (Core ML cannot run models elsewhere; the reason "
                "is logged); conversion everywhere",
    tolerance=(f"{scientific(COREML_FP32_TOLERANCE)} fp32, "
               f"{scientific(COREML_FP16_TOLERANCE)} fp16"),
    export=_export, dynamic_batch=False, raw_pixels=False, image_input=True,
    describe=lambda job: f"Core ML mlprogram ({job.coreml_precision})",
    hints={"raw_pixels": "use --image-input: Core ML's image input bakes the normalization in",
           "dynamic_batch": "Core ML export is batch 1: batch through Core ML's predict API"})
