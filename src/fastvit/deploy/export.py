"""``export_model``: a loaded FastViT as a verified file in any registered format
(:mod:`fastvit.deploy.registry`); ``quantize_export``: its int8 sibling, for the formats
that have one.

The model given is the deploy form (:func:`fastvit.load_model` with its
defaults: reparameterized, BatchNorms folded). Every file is written to a
temporary path, verified against the eager model on random input, and only
then moved into place: a failed check leaves no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fastvit.deploy.formats import ExportJob, Int8Job
from fastvit.deploy.metadata import export_metadata
from fastvit.deploy.normalization import bake_normalization
from fastvit.deploy.onnx_export import ONNX_OPSET
from fastvit.deploy.registry import check_export_options, export_format
from fastvit.deploy.verification import Verification
from fastvit.pipeline import Loaded


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
    job: ExportJob  # what the format was given: an int8 sibling starts from it

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
    return Path(folder) / f"{variant}_{image_size}{export_format(fmt).suffix}"


def exported_module(loaded: Loaded, raw_pixels: bool) -> nn.Module:
    """The module a file is made from: ``loaded.model`` (already fused), with the input
    normalization baked into its first convolution when the file takes raw pixels."""
    model = loaded.model.eval()
    return bake_normalization(model, loaded.cfg["mean"], loaded.cfg["std"]) if raw_pixels else model


def export_model(loaded: Loaded, fmt: str, path: str | Path | None = None, *,
                 image_size: int | None = None, dynamic_batch: bool = False,
                 raw_pixels: bool = False, image_input: bool = False, opset: int = ONNX_OPSET,
                 exporter: str = "dynamo", coreml_precision: str = "fp16") -> ExportResult:
    """Export ``loaded.model`` (already in its deploy form) to ``path`` and verify it.

    ``raw_pixels`` bakes the normalization into the first convolution (the file
    then takes 0..255 RGB); ``image_input`` does the same for Core ML with an
    image input. The file carries the preprocessing facts as metadata. Options the
    format does not support are refused before any work (see the registry).
    """
    spec = check_export_options(fmt, image_size=image_size, dynamic_batch=dynamic_batch,
                                raw_pixels=raw_pixels, image_input=image_input,
                                features_only=getattr(loaded.model, "features_only", False))
    size = image_size or loaded.image_size
    out = Path(path) if path is not None else default_export_path(loaded.variant, size, fmt)
    job = ExportJob(loaded=loaded, module=exported_module(loaded, raw_pixels), path=out,
                    image_size=size,
                    metadata=export_metadata(loaded, size, raw_pixels or image_input),
                    opset=opset, exporter=exporter, coreml_precision=coreml_precision,
                    dynamic_batch=dynamic_batch, raw_pixels=raw_pixels, image_input=image_input)
    check = spec.export(job)
    return ExportResult(job.path, fmt, spec.description(job), loaded.variant, size,
                        dynamic_batch, raw_pixels or image_input, check, job)


def quantize_export(result: ExportResult, calibration: str | Path, *,
                    calibration_size: int = 128, eval_dir: str | Path | None = None,
                    min_agreement: float | None = None,
                    min_cosine: float | None = None) -> dict:
    """int8 sibling of a verified fp32 export (e.g. ``<name>.int8.onnx``), calibrated on
    the ImageFolder ``calibration``; returns the fp32/int8 agreement report, also
    written to ``<name>.int8.json`` (see the format's int8 path, e.g.
    :func:`fastvit.deploy.quantize.quantize_int8`). An embedding model (a MobileCLIP
    tower) is judged by cosine similarity (``min_cosine``: the least mean) and
    nearest-neighbour agreement (``min_agreement``), see
    :func:`fastvit.deploy.calibration.score_int8`."""
    spec = check_export_options(result.format, int8=True, features_only=getattr(
        result.job.loaded.model, "features_only", False))
    assert spec.quantize is not None  # check_export_options refused a format without int8
    return spec.quantize(Int8Job(
        fp32=result.job, calibration=Path(calibration), calibration_size=calibration_size,
        eval_dir=Path(eval_dir) if eval_dir is not None else None, min_agreement=min_agreement,
        min_cosine=min_cosine))
