"""int8 post-training static quantization with ONNX Runtime (QDQ, per-channel).

Calibration images come from an ImageFolder, preprocessed exactly like the
exported model expects (the ONNX file's own ``fastvit.*`` metadata). The int8
model is checked against the fp32 one (top-1 agreement; for an embedding tower
cosine similarity and nearest-neighbour agreement, see
:mod:`fastvit.deploy.calibration`) and, for a classifier given a labelled set,
both files are scored; nothing is written when a gate is not met.

What makes the int8 file faster than fp32 on a CPU (measured with
``benchmarks/latency_deploy.py --investigate``; a naive QDQ quantization of
every op is *slower* than fp32 ONNX Runtime here):

* only convolutions and matrix products (and the data movement between them)
  are quantized (``QUANTIZED_OPS``); GELU
  is fused into ONNX Runtime's ``Gelu`` kernel *before* quantization and stays
  float between a dequantize and a quantize (quantizing the erf chain op by op
  costs more than it saves);
* uint8 activations with int8 weights (U8S8, ONNX Runtime's x86-64 fast path;
  S8S8 measured ~2x slower on an AVX512-VNNI CPU);
* grouped convolutions with two outputs per group (the patch embeddings' 7x7
  and the head's 3x3 expansion), for which ONNX Runtime has no fast int8 kernel
  (5x slower than fp32), are first split into depthwise ones, exactly
  (:mod:`fastvit.deploy.conv_split`), so they run in int8 too: 0.92x of the int8
  latency with them kept float. Grouped convolutions that cannot be split stay float.

The int8 file therefore uses one ONNX Runtime contrib op (``com.microsoft.Gelu``):
it targets ONNX Runtime, like QDQ int8 models in general.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fastvit.deploy.calibration import check_gates, int8_sets, is_embedding_model, score_int8
from fastvit.deploy.calibration import int8_summary as int8_summary
from fastvit.deploy.conv_split import split_channel_multiplier_convs
from fastvit.deploy.metadata import transform_for_file
from fastvit.deploy.onnx_runtime import ort_session, read_onnx_metadata
from fastvit.deploy.spinning import ort_spin_entries
from fastvit.extras import require
from fastvit.files import atomic_path, atomic_write_text
from fastvit.pipeline import Loaded

_FEATURE = "int8 quantization"
_quantization = require("onnxruntime.quantization", _FEATURE)
CalibrationDataReader = _quantization.CalibrationDataReader
CalibrationMethod = _quantization.CalibrationMethod
QuantFormat = _quantization.QuantFormat
QuantType = _quantization.QuantType
quantize_static = _quantization.quantize_static
quant_pre_process = require("onnxruntime.quantization.shape_inference",
                            _FEATURE).quant_pre_process
ACTIVATION_TYPE = QuantType.QUInt8  # U8S8: see the module docstring
WEIGHT_TYPE = QuantType.QInt8
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Concat", "Reshape", "Transpose")


def int8_path_for(fp32_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    path = Path(fp32_path)
    return path.with_name(path.stem + ".int8" + path.suffix)


class TensorCalibration(CalibrationDataReader):
    """Feeds preprocessed images (a sequence of CHW tensors) one batch at a time."""

    def __init__(self, images: Iterator[torch.Tensor] | Sequence[torch.Tensor], input_name: str,
                 total: int | None = None, progress: bool = True) -> None:
        self._images = iter(images)
        self._input_name = input_name
        self._bar = tqdm(total=total, desc="calibrating", unit="img", disable=not progress,
                         leave=False)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        if image is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {self._input_name: image.unsqueeze(0).numpy().astype(np.float32)}


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path, reader: CalibrationDataReader,
                  *, activation_type: QuantType = ACTIVATION_TYPE, extra_metadata:
                  dict[str, str] | None = None, check=None,
                  op_types: Sequence[str] = QUANTIZED_OPS, split_convs: bool = True) -> Path:
    """Static QDQ per-channel quantization of ``fp32_path`` into ``int8_path`` (atomic).

    ``check(tmp_int8_path)`` runs before the file is moved into place; it may raise.
    ``split_convs=False`` keeps channel-multiplier convolutions whole (and float).
    """
    onnx = require("onnx", _FEATURE)
    ort = require("onnxruntime", _FEATURE)

    ort.set_default_logger_severity(3)  # the pre-processing's "removing initializer" notes
    metadata = read_onnx_metadata(fp32_path)
    metadata.update(extra_metadata or {})
    with tempfile.TemporaryDirectory() as scratch, atomic_path(int8_path) as tmp:
        fused_gelu, prepared = Path(scratch) / "gelu.onnx", Path(scratch) / "prepared.onnx"
        fuse_gelu_for_ort(fp32_path, fused_gelu)
        if split_convs:
            split_channel_multiplier_convs(fused_gelu, fused_gelu)
        # Shape inference + ORT's basic graph optimizations (constant folding, Conv+BN...).
        quant_pre_process(str(fused_gelu), str(prepared), skip_symbolic_shape=False)
        with calibration_sessions_follow_policy():
            quantize_static(str(prepared), str(tmp), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=activation_type,
                            weight_type=WEIGHT_TYPE, calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=list(op_types),
                            nodes_to_exclude=channel_multiplier_convs(prepared))
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        if check is not None:
            check(tmp)
    return Path(int8_path)


@contextlib.contextmanager
def calibration_sessions_follow_policy() -> Iterator[None]:
    """Make the sessions ONNX Runtime's calibrator opens follow our thread policy
    (:mod:`fastvit.deploy.spinning`): it builds them with default options, whose pool
    threads spin on every core between calibration batches."""
    calibrate = require("onnxruntime.quantization.calibrate", _FEATURE)
    ort = require("onnxruntime", _FEATURE)
    base = calibrate.CalibraterBase
    original = base.create_inference_session

    def create_inference_session(self) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        for key, value in ort_spin_entries().items():
            options.add_session_config_entry(key, value)
        self.infer_session = ort.InferenceSession(self.augmented_model_path,
                                                  sess_options=options,
                                                  providers=self.execution_providers)

    base.create_inference_session = create_inference_session
    try:
        yield
    finally:
        base.create_inference_session = original


def fuse_gelu_for_ort(src: str | Path, dst: str | Path) -> int:
    """Replace the exported erf-GELU (see :func:`fastvit.deploy.onnx_export.canonicalize_gelu`) by
    ONNX Runtime's ``com.microsoft.Gelu``; returns how many were fused."""
    import math

    ir = require("onnx_ir", _FEATURE)
    pattern = require("onnxscript.rewriter.pattern", _FEATURE)

    def erf_gelu(op, x):
        return op.Mul(op.Mul(x, op.Add(op.Erf(op.Div(x, math.sqrt(2))), 1.0)), 0.5)

    def ort_gelu(op, x):
        return op.Gelu(x, _domain="com.microsoft")

    model = ir.load(str(src))
    count = pattern.RewriteRuleSet([pattern.RewriteRule(erf_gelu, ort_gelu)]).apply_to_model(
        model)
    if count:
        model.opset_imports["com.microsoft"] = 1
    ir.save(model, str(dst))
    return count


def channel_multiplier_convs(path: str | Path) -> list[str]:
    """Names of grouped convolutions that are not depthwise (out channels != groups)."""
    onnx = require("onnx", _FEATURE)
    graph = onnx.load(str(path)).graph
    out_channels = {init.name: init.dims[0] for init in graph.initializer if len(init.dims) == 4}
    names = []
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if (node.op_type == "Conv" and group > 1
                and out_channels.get(node.input[1], group) != group):
            names.append(node.name)
    return names


def outputs(session, images: Sequence[torch.Tensor]) -> np.ndarray:
    """The (N, D) outputs (logits or embeddings) of the images, one at a time (batch 1:
    works for static-batch files too)."""
    name = session.get_inputs()[0].name
    return np.stack([np.asarray(session.run(None, {name: x.unsqueeze(0).numpy()})[0])[0]
                     for x in images])


def predictions(session, images: Sequence[torch.Tensor]) -> np.ndarray:
    """Top-1 class index of each image."""
    return outputs(session, images).argmax(axis=1)


def quantize_int8(loaded: Loaded, fp32_path: str | Path, calibration: str | Path, *,
                  calibration_size: int = 128, eval_dir: str | Path | None = None,
                  min_agreement: float | None = None, image_size: int | None = None,
                  min_cosine: float | None = None) -> dict:
    """Quantize a verified fp32 ONNX file to ``<name>.int8.onnx`` and report agreement.

    Calibration images are spread over the classes of the ImageFolder
    ``calibration``; with ``eval_dir`` (a labelled ImageFolder, class folder i =
    output i) both files are scored there, else on the calibration images. The
    int8 file is written only when top-1 agreement with fp32 is at least
    ``min_agreement``; the report goes to ``<name>.int8.json`` and is returned.
    An embedding model (:func:`~fastvit.deploy.calibration.is_embedding_model`) is
    judged by cosine similarity (``min_cosine`` gates the mean) and nearest-neighbour
    agreement (``min_agreement`` gates it) instead.
    """
    check_gates(loaded, min_cosine)
    embedding = is_embedding_model(loaded)
    fp32_path = Path(fp32_path)
    transform = transform_for_file(read_onnx_metadata(fp32_path), loaded.cfg, image_size)
    sets = int8_sets(loaded, transform, calibration, calibration_size=calibration_size,
                     eval_dir=eval_dir)
    input_name = ort_session(fp32_path).get_inputs()[0].name
    reader = TensorCalibration(sets.calibration_images(), input_name, len(sets.picked))
    report: dict = {}

    def check(tmp: Path) -> None:
        report.update(score_int8(outputs(ort_session(fp32_path), sets.images),
                                 outputs(ort_session(tmp), sets.images), sets,
                                 embedding=embedding, min_agreement=min_agreement,
                                 min_cosine=min_cosine))

    out = int8_path_for(fp32_path)
    method = "int8 QDQ per-channel"
    quantize_onnx(fp32_path, out, reader, check=check, extra_metadata={
        "fastvit.quantization": f"{method}, {len(sets.picked)} calibration "
                                f"images from {calibration}"})
    report.update(fp32=str(fp32_path), int8=str(out), scored_on=sets.scored_on,
                  calibration_images=len(sets.picked), method=method)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    return report
