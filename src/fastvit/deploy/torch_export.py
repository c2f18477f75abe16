"""TorchScript (traced) and ``torch.export`` programs of a fused FastViT, verified."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

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
