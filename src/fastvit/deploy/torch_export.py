"""``torch.export`` programs (``.pt2``) of a fused FastViT, verified: the graph PyTorch's
own compilers and runtimes (AOTInductor, ExecuTorch) start from."""

from __future__ import annotations

import json
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


def export_program(model: nn.Module, path: str | Path, *, image_size: int,
                   dynamic_batch: bool = False, raw_pixels: bool = False,
                   metadata: dict[str, str] | None = None) -> Verification:
    """``torch.export.export`` the model to a ``.pt2`` file, reload it and compare."""
    model = model.eval()
    example = example_input(2 if dynamic_batch else 1, image_size, raw_pixels)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    batches = verify_batches(dynamic_batch)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: the temp name does not end in .pt2
            torch.export.save(program, fh, extra_files={"fastvit.json": json.dumps(metadata or {})})
        with open(tmp, "rb") as fh:
            loaded = torch.export.load(fh).module()
        inputs = [example_input(b, image_size, raw_pixels, seed=b) for b in batches]
        diff = compare(model, loaded, inputs)
        return check_tolerance("torch.export", diff, TORCH_TOLERANCE, batches)


def _export(job: ExportJob) -> Verification:
    return export_program(job.module, job.path, **job.tensor_options())


FORMAT = ExportFormat(
    name="torch-export", title="torch.export program", suffix=".pt2", extra=None, requires=(),
    verified_by="the saved program reloaded, same batches", tolerance=scientific(TORCH_TOLERANCE),
    export=_export)
