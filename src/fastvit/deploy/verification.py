"""Numeric verification of exported programs against the eager model.

Every exporter writes to a temporary path, runs the written file on random
input, compares with PyTorch eager here, and only then moves the file into
place: a failed check leaves no file (:class:`ExportVerificationError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fastvit.errors import FastVitError

ONNX_TOLERANCE = 1e-4  # max |ORT - eager|
TORCH_TOLERANCE = 1e-5  # max |TorchScript or torch.export - eager|


class ExportVerificationError(FastVitError):
    """An exported program does not reproduce the eager model within tolerance."""


@dataclass
class Verification:
    max_abs_diff: float
    tolerance: float
    batches: tuple[int, ...]


def example_input(batch: int, image_size: int, raw_pixels: bool = False,
                  seed: int = 0) -> torch.Tensor:
    """Random input: N(0, 1) for normalized models, uniform 0..255 for raw-pixel ones."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 3, image_size, image_size)
    return torch.rand(shape, generator=g) * 255 if raw_pixels else torch.randn(shape, generator=g)


def flat_outputs(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return list(out) if isinstance(out, list | tuple) else [out]


def output_names(model: nn.Module) -> list[str]:
    """``logits``, or ``feature_0..3`` for a features_only backbone."""
    if getattr(model, "features_only", False):
        return [f"feature_{i}" for i in range(len(model.feature_info))]
    return ["logits"]


@torch.no_grad()
def compare(reference: nn.Module, run, inputs: Sequence[torch.Tensor],
            relative: bool = False) -> float:
    """Max |reference(x) - run(x)| over ``inputs`` (``run`` returns tensors or arrays);
    ``relative`` divides by max(1, max |reference(x)|) (for models with huge outputs,
    e.g. randomly initialized peers)."""
    worst = 0.0
    for x in inputs:
        expected = flat_outputs(reference(x))
        got = flat_outputs(run(x))
        if len(got) != len(expected):
            raise ExportVerificationError(f"exported program returns {len(got)} outputs, "
                                          f"the model {len(expected)}")
        for e, g in zip(expected, got, strict=True):
            g = torch.as_tensor(g)
            if tuple(g.shape) != tuple(e.shape):
                raise ExportVerificationError(f"exported output shape {tuple(g.shape)} differs "
                                              f"from the model's {tuple(e.shape)}")
            diff = float((g.float() - e.float()).abs().max())
            if relative:
                diff /= max(1.0, float(e.float().abs().max()))
            worst = max(worst, diff)
    return worst


def check_tolerance(what: str, diff: float, tolerance: float, batches: tuple[int, ...]
                    ) -> Verification:
    """Raise :class:`ExportVerificationError` unless ``diff <= tolerance``."""
    if not diff <= tolerance:  # also catches NaN
        raise ExportVerificationError(
            f"{what} output differs from PyTorch eager by max |diff| = {diff:.3g} > "
            f"{tolerance:g} (batches {', '.join(map(str, batches))}); the file was not written")
    return Verification(diff, tolerance, batches)


def verify_batches(dynamic_batch: bool) -> tuple[int, ...]:
    return (1, 4) if dynamic_batch else (1,)


def check_agreement(agreement: float, min_agreement: float | None, scored_on: str, *,
                    what: str = "int8 top-1 agrees with fp32") -> None:
    """Raise :class:`ExportVerificationError` when int8/fp32 agreement (top-1, or an
    embedding model's nearest-neighbour agreement) is too low."""
    if min_agreement is not None and agreement < min_agreement:
        raise ExportVerificationError(
            f"{what} on {agreement:.1%} of {scored_on}, below "
            f"--min-agreement {min_agreement:.1%}; the int8 file was not written")


def check_cosine(cosine_mean: float, min_cosine: float | None, scored_on: str) -> None:
    """Raise :class:`ExportVerificationError` when the mean int8/fp32 embedding cosine
    similarity is too low."""
    if min_cosine is not None and not cosine_mean >= min_cosine:
        raise ExportVerificationError(
            f"int8 embeddings have a mean cosine similarity of {cosine_mean:.4f} with fp32 "
            f"on {scored_on}, below --min-cosine {min_cosine:g}; the int8 file was not "
            f"written")
