"""``export_model``: a loaded FastViT as a verified ONNX, Core ML, TorchScript, torch.export or
ExecuTorch file; ``quantize_export``: its int8 sibling (ONNX Runtime or ExecuTorch).

The model given is the deploy form (:func:`fastvit.load_model` with its
defaults: reparameterized, BatchNorms folded). Every file is written to a
temporary path, verified against the eager model on random input, and only
then moved into place: a failed check leaves no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fastvit.deploy.metadata import export_metadata
from fastvit.deploy.normalization import bake_normalization
from fastvit.deploy.onnx_export import EXPORTERS, ONNX_OPSET, export_onnx
from fastvit.deploy.torch_export import export_program, export_torchscript
from fastvit.deploy.verification import Verification
from fastvit.errors import ConfigError
from fastvit.pipeline import Loaded

FORMATS = ("onnx", "coreml", "torchscript", "torch-export", "executorch")
SUFFIXES = {"onnx": ".onnx", "coreml": ".mlpackage", "torchscript": ".ts.pt",
            "torch-export": ".pt2", "executorch": ".pte"}
INT8_FORMATS = ("onnx", "executorch")
COREML_PRECISIONS = ("fp16", "fp32")


@dataclass
class ExportResult:
    """What was written and how it was checked (``verification`` is None when the
    runtime cannot run here, e.g. Core ML off macOS)."""

    path: Path
    format: str
    description: str
    variant: str
    image_size: int
    dynamic_batch: bool
    raw_input: bool
    verification: Verification | None

    def summary(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else "batch 1"
        verdict = (f"verified: max |diff| {self.verification.max_abs_diff:.2e} <= "
                   f"{self.verification.tolerance:g}" if self.verification is not None
                   else "not run (Core ML predicts on macOS only)")
        size = f"{self.image_size}x{self.image_size}"
        kind = "raw 0-255 RGB" if self.raw_input else "normalized"
        return (f"wrote {self.path}: {self.description}, fused {self.variant}, {batch}, {size}, "
                f"{kind} input; {verdict}")

    def as_dict(self) -> dict:
        check = self.verification
        return {"path": str(self.path), "format": self.format, "description": self.description,
                "variant": self.variant, "image_size": self.image_size,
                "dynamic_batch": self.dynamic_batch, "raw_input": self.raw_input,
                "max_abs_diff": check.max_abs_diff if check else None,
                "tolerance": check.tolerance if check else None}


def default_export_path(variant: str, image_size: int, fmt: str, folder: str | Path = "."
                        ) -> Path:
    """``FOLDER/<variant>_<size><suffix>``, e.g. ``fastvit_t8_256.onnx``."""
    return Path(folder) / f"{variant}_{image_size}{SUFFIXES[fmt]}"


def check_export_options(fmt: str, *, raw_pixels: bool, image_input: bool,
                         dynamic_batch: bool, image_size: int | None) -> None:
    """Refuse combinations that cannot be honoured (one readable error each)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if image_size is not None and image_size < 32:
        raise ConfigError(f"--image-size must be >= 32, got {image_size}")
    if image_input and fmt != "coreml":
        raise ConfigError("--image-input is for --format coreml (use --raw-pixels otherwise)")
    if raw_pixels and fmt == "coreml":
        raise ConfigError("for Core ML use --image-input (normalization is baked in)")
    if fmt == "coreml" and dynamic_batch:
        raise ConfigError("Core ML export is batch 1 (batch through Core ML's predict API)")
    if fmt == "executorch":
        from fastvit.deploy.executorch_export import require_executorch

        require_executorch()


def deploy_form(loaded: Loaded, raw_pixels: bool) -> nn.Module:
    """The module that gets exported: ``loaded.model``, normalization baked in if asked."""
    model = loaded.model.eval()
    return bake_normalization(model, loaded.cfg["mean"], loaded.cfg["std"]) if raw_pixels else model


def export_model(loaded: Loaded, fmt: str, path: str | Path | None = None, *,
                 image_size: int | None = None, dynamic_batch: bool = False,
                 raw_pixels: bool = False, image_input: bool = False, opset: int = ONNX_OPSET,
                 exporter: str = "dynamo", coreml_precision: str = "fp16") -> ExportResult:
    """Export ``loaded.model`` (already in its deploy form) to ``path`` and verify it.

    ``raw_pixels`` bakes the normalization into the first convolution (the file
    then takes 0..255 RGB); ``image_input`` does the same for Core ML with an
    image input. The file carries the preprocessing facts as metadata.
    """
    check_export_options(fmt, raw_pixels=raw_pixels, image_input=image_input,
                         dynamic_batch=dynamic_batch, image_size=image_size)
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; choose one of {EXPORTERS}")
    size = image_size or loaded.image_size
    out = Path(path) if path is not None else default_export_path(loaded.variant, size, fmt)
    model = deploy_form(loaded, raw_pixels)
    meta = export_metadata(loaded, size, raw_pixels or image_input)
    if fmt == "onnx":
        check = export_onnx(model, out, image_size=size, dynamic_batch=dynamic_batch,
                            opset=opset, exporter=exporter, raw_pixels=raw_pixels, metadata=meta)
        what = f"ONNX opset {opset} ({exporter} exporter)"
    elif fmt == "torchscript":
        check = export_torchscript(model, out, image_size=size, dynamic_batch=dynamic_batch,
                                   raw_pixels=raw_pixels, metadata=meta)
        what = "TorchScript (traced)"
    elif fmt == "torch-export":
        check = export_program(model, out, image_size=size, dynamic_batch=dynamic_batch,
                               raw_pixels=raw_pixels, metadata=meta)
        what = "torch.export program"
    elif fmt == "executorch":
        from fastvit.deploy.executorch_export import export_executorch

        check = export_executorch(model, out, image_size=size, dynamic_batch=dynamic_batch,
                                  raw_pixels=raw_pixels, metadata=meta)
        what = "ExecuTorch program (XNNPACK delegate)"
    else:
        if coreml_precision not in COREML_PRECISIONS:
            raise ConfigError(f"Core ML precision must be fp16 or fp32, got {coreml_precision!r}")
        from fastvit.deploy.coreml import export_coreml

        check = export_coreml(loaded, out, image_size=size, image_input=image_input,
                              precision=coreml_precision, metadata=meta)
        what = f"Core ML mlprogram ({coreml_precision})"
    return ExportResult(out, fmt, what, loaded.variant, size, dynamic_batch,
                        raw_pixels or image_input, check)


def quantize_export(loaded: Loaded, result: ExportResult, calibration: str | Path, *,
                    calibration_size: int = 128, eval_dir: str | Path | None = None,
                    min_agreement: float | None = None) -> dict:
    """int8 sibling of a verified fp32 export (``<name>.int8.onnx`` or ``<name>.int8.pte``),
    calibrated on the ImageFolder ``calibration``; returns the agreement report (see
    :func:`fastvit.deploy.quantize.quantize_int8` and
    :func:`fastvit.deploy.executorch_export.quantize_executorch_int8`)."""
    if result.format not in INT8_FORMATS:
        raise ConfigError(f"int8 is for --format {' or '.join(INT8_FORMATS)}, "
                          f"not {result.format}")
    if getattr(loaded.model, "features_only", False):
        raise ConfigError("int8 export scores top-1 agreement: it needs a classifier, "
                          "not --features-only")
    if result.format == "onnx":
        from fastvit.deploy.quantize import quantize_int8

        return quantize_int8(loaded, result.path, calibration, calibration_size=calibration_size,
                             eval_dir=eval_dir, min_agreement=min_agreement,
                             image_size=result.image_size)
    from fastvit.deploy.executorch_export import quantize_executorch_int8

    return quantize_executorch_int8(
        loaded, deploy_form(loaded, result.raw_input), result.path, calibration,
        metadata=export_metadata(loaded, result.image_size, result.raw_input),
        image_size=result.image_size, dynamic_batch=result.dynamic_batch,
        raw_pixels=result.raw_input, calibration_size=calibration_size, eval_dir=eval_dir,
        min_agreement=min_agreement)
