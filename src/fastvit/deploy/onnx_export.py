"""ONNX export of a fused FastViT, verified in ONNX Runtime.

ONNX: opset 18 (``ONNX_OPSET``) through the torch.export-based exporter
(``dynamo=True``), which handles ``scaled_dot_product_attention`` directly.
Its GELU comes out as ``x * (0.5 * (erf(x / sqrt2) + 1))``, an operand order
ONNX Runtime's GELU fusion does not match; unfused, the erf chain also breaks
ORT's NCHWc convolution layout between every block (about 3x slower on CPU).
:func:`canonicalize_gelu` rewrites it, with standard ONNX ops only, to
``(x * (erf(x / sqrt2) + 1)) * 0.5``, which ORT fuses into one Gelu kernel.
The legacy TorchScript exporter (``--exporter torchscript``) emits that order
by itself but is deprecated since PyTorch 2.9.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from fastvit.deploy.formats import ExportFormat, ExportJob, Int8Job, scientific
from fastvit.deploy.onnx_runtime import ort_runner, ort_session
from fastvit.deploy.verification import (
    ONNX_TOLERANCE,
    ExportVerificationError,
    Verification,
    check_tolerance,
    compare,
    example_input,
    output_names,
    verify_batches,
)
from fastvit.errors import ConfigError
from fastvit.extras import require
from fastvit.files import atomic_path

ONNX_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
_FEATURE = "ONNX export"
_REQUIRES = ("onnx", "onnxruntime", "onnxscript")


def canonicalize_gelu(onnx_model) -> int:
    """Rewrite the dynamo exporter's erf-GELU into the operand order ONNX Runtime
    fuses; returns the number of rewrites (standard ONNX ops only)."""
    import numpy as np

    ir = require("onnx_ir", _FEATURE)
    pattern = require("onnxscript.rewriter.pattern", _FEATURE)

    def exported_gelu(op, x):
        return x * (0.5 * (op.Erf(x / math.sqrt(2)) + 1.0))

    def scalar(op, value: float):  # a tensor-valued Constant: every ONNX tool reads it
        return op.Constant(value=ir.tensor(np.array(value, dtype=np.float32)))

    def fusable_gelu(op, x):
        root2, one, half = scalar(op, math.sqrt(2)), scalar(op, 1.0), scalar(op, 0.5)
        return op.Mul(op.Mul(x, op.Add(op.Erf(op.Div(x, root2)), one)), half)

    rules = pattern.RewriteRuleSet([pattern.RewriteRule(exported_gelu, fusable_gelu)])
    return rules.apply_to_model(onnx_model)


def _export_dynamo(model: nn.Module, path: Path, example: torch.Tensor, names: list[str],
                   dynamic_batch: bool, opset: int, metadata: dict[str, str]) -> None:
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                    input_names=["input"], output_names=names,
                                    dynamic_shapes=dynamic, optimize=True, verbose=False)
    canonicalize_gelu(program.model)
    program.model.metadata_props.update(metadata)
    program.save(path, external_data=False)


def _export_torchscript_onnx(model: nn.Module, path: Path, example: torch.Tensor,
                             names: list[str], dynamic_batch: bool, opset: int,
                             metadata: dict[str, str]) -> None:
    onnx = require("onnx", _FEATURE)
    axes = {n: {0: "batch"} for n in ["input", *names]} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=names, dynamic_axes=axes)
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def verify_onnx(path: str | Path, model: nn.Module, image_size: int, dynamic_batch: bool,
                raw_pixels: bool = False, tolerance: float = ONNX_TOLERANCE,
                relative: bool = False) -> Verification:
    """Check the file with ``onnx.checker`` and run it in ONNX Runtime against eager."""
    onnx = require("onnx", _FEATURE)

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportVerificationError(f"onnx.checker rejects the export: {err}") from None
    batches = verify_batches(dynamic_batch)
    inputs = [example_input(b, image_size, raw_pixels, seed=b) for b in batches]
    diff = compare(model, ort_runner(ort_session(path)), inputs, relative)
    what = "ONNX Runtime" + (" (relative)" if relative else "")
    return check_tolerance(what, diff, tolerance, batches)


def export_onnx(model: nn.Module, path: str | Path, *, image_size: int,
                dynamic_batch: bool = False, opset: int = ONNX_OPSET, exporter: str = "dynamo",
                raw_pixels: bool = False, metadata: dict[str, str] | None = None,
                relative: bool = False) -> Verification:
    """Export ``model`` (fused, eval) to ONNX, verify it in ONNX Runtime, write atomically.

    ``relative`` checks max |diff| / max(1, max |output|) instead (see :func:`compare`).
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; choose one of {EXPORTERS}")
    for needed in _REQUIRES:  # before any work is done
        require(needed, _FEATURE)
    model = model.eval()
    example = example_input(2 if dynamic_batch else 1, image_size, raw_pixels)
    write = _export_dynamo if exporter == "dynamo" else _export_torchscript_onnx
    with atomic_path(path) as tmp:
        write(model, tmp, example, output_names(model), dynamic_batch, opset, metadata or {})
        return verify_onnx(tmp, model, image_size, dynamic_batch, raw_pixels,
                           relative=relative)


def _export(job: ExportJob) -> Verification:
    return export_onnx(job.module, job.path, opset=job.opset, exporter=job.exporter,
                       **job.tensor_options())


def _quantize(job: Int8Job) -> dict:
    from fastvit.deploy.quantize import quantize_int8  # ONNX Runtime's quantization tools

    return quantize_int8(job.fp32.loaded, job.fp32.path, job.calibration,
                         calibration_size=job.calibration_size, eval_dir=job.eval_dir,
                         min_agreement=job.min_agreement, image_size=job.fp32.image_size,
                         min_cosine=job.min_cosine)


FORMAT = ExportFormat(
    name="onnx", title="ONNX", suffix=".onnx", extra="export", requires=_REQUIRES,
    verified_by="`onnx.checker` (full check) + ONNX Runtime on random input, batch 1 (and 4 "
                "with `--dynamic-batch`)",
    tolerance=scientific(ONNX_TOLERANCE), export=_export, quantize=_quantize,
    describe=lambda job: f"ONNX opset {job.opset} ({job.exporter} exporter)")
