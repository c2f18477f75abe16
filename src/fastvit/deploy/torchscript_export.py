"""TorchScript (traced) files of a fused FastViT, verified: what C++ (libtorch) apps load."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from fastvit.deploy.formats import ExportFormat, ExportJob, scientific
from fastvit.deploy.verification import (
    TORCH_TOLERANCE,
    Verification,
    check_tolerance,
    compare,
    example_input,
    verify_batches,
)
from fastvit.files import atomic_path


def export_torchscript(model: nn.Module, path: str | Path, *, image_size: int,
                       dynamic_batch: bool = False, raw_pixels: bool = False,
                       metadata: dict[str, str] | None = None) -> Verification:
    """``torch.jit.trace`` the model, save it, reload the file and compare with eager."""
    model = model.eval()
    example = example_input(1, image_size, raw_pixels)
    batches = verify_batches(dynamic_batch)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # TorchScript is deprecated (FutureWarning) but still what many C++ apps load.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={"fastvit.json": json.dumps(metadata or {})})
        loaded = torch.jit.load(str(tmp), map_location="cpu")
        inputs = [example_input(b, image_size, raw_pixels, seed=b) for b in batches]
        diff = compare(model, loaded, inputs)
        return check_tolerance("TorchScript", diff, TORCH_TOLERANCE, batches)


def _export(job: ExportJob) -> Verification:
    return export_torchscript(job.module, job.path, **job.tensor_options())


FORMAT = ExportFormat(
    name="torchscript", title="TorchScript (traced)", suffix=".ts.pt", extra=None, requires=(),
    verified_by="the saved file reloaded, same batches", tolerance=scientific(TORCH_TOLERANCE),
    export=_export)
