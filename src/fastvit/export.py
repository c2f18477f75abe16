"""``fastvit export``: a fused FastViT as ONNX, Core ML, TorchScript or torch.export.

Every file is written to a temporary path, verified against the eager model
on random input, and only then moved into place: a failed check leaves no file.

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

import argparse
import contextlib
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastvit.deploy import DeployModel, bake_normalization, load_deploy_model
from fastvit.errors import ConfigError, FastVitError
from fastvit.io import atomic_path
from fastvit.model import list_models

ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-4  # max |ORT - eager|
TORCH_TOLERANCE = 1e-5  # max |TorchScript or torch.export - eager|
FORMATS = ("onnx", "coreml", "torchscript", "torch-export")
EXPORTERS = ("dynamo", "torchscript")
SUFFIXES = {"onnx": ".onnx", "coreml": ".mlpackage", "torchscript": ".ts.pt",
            "torch-export": ".pt2"}


class ExportVerificationError(FastVitError):
    """An exported program does not reproduce the eager model within tolerance."""


@dataclass
class Verification:
    max_abs_diff: float
    tolerance: float
    batches: tuple[int, ...]


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def example_input(batch: int, image_size: int, raw_pixels: bool = False,
                  seed: int = 0) -> torch.Tensor:
    """Random input: N(0, 1) for normalized models, uniform 0..255 for raw-pixel ones."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 3, image_size, image_size)
    return torch.rand(shape, generator=g) * 255 if raw_pixels else torch.randn(shape, generator=g)


def _outputs(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
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
        expected = _outputs(reference(x))
        got = _outputs(run(x))
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


def _verify_batches(dynamic_batch: bool) -> tuple[int, ...]:
    return (1, 4) if dynamic_batch else (1,)


def export_metadata(dm: DeployModel, image_size: int, raw_pixels: bool) -> dict[str, str]:
    """What a consumer needs to feed the exported model (stored in the file)."""
    cfg = dm.default_cfg
    meta = {
        "fastvit.variant": dm.name,
        "fastvit.image_size": str(image_size),
        "fastvit.input": "raw_pixels_0_255" if raw_pixels else "normalized",
        "fastvit.mean": json.dumps(list(cfg["mean"])),
        "fastvit.std": json.dumps(list(cfg["std"])),
        "fastvit.crop_pct": str(cfg["crop_pct"]),
        "fastvit.interpolation": str(cfg["interpolation"]),
        "fastvit.source": dm.source,
    }
    if dm.class_names is not None:
        meta["fastvit.class_names"] = json.dumps(dm.class_names)
    return meta


# ---------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------


def canonicalize_gelu(onnx_model) -> int:
    """Rewrite the dynamo exporter's erf-GELU into the operand order ONNX Runtime
    fuses; returns the number of rewrites (standard ONNX ops only)."""
    import numpy as np
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

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
    import onnx

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


def ort_session(path: str | Path, threads: int | None = None, providers: Sequence[str] = (
        "CPUExecutionProvider",), level: str = "all", spinning: bool = True):
    """An ONNX Runtime session with full graph optimization and ``threads`` intra-op threads.

    ``spinning=False`` stops idle pool threads from busy-waiting after a run: slightly
    slower wake-ups, but they no longer steal cores from whatever runs next (needed
    when timing several runtimes interleaved in one process).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=list(providers))


def ort_runner(session):
    """``x (tensor) -> list of output arrays`` for a single-input session."""
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.detach().cpu().numpy()})


def verify_onnx(path: str | Path, model: nn.Module, image_size: int, dynamic_batch: bool,
                raw_pixels: bool = False, tolerance: float = ONNX_TOLERANCE,
                relative: bool = False) -> Verification:
    """Check the file with ``onnx.checker`` and run it in ONNX Runtime against eager."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportVerificationError(f"onnx.checker rejects the export: {err}") from None
    batches = _verify_batches(dynamic_batch)
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
    model = model.eval()
    example = example_input(2 if dynamic_batch else 1, image_size, raw_pixels)
    write = _export_dynamo if exporter == "dynamo" else _export_torchscript_onnx
    with atomic_path(path) as tmp:
        write(model, tmp, example, output_names(model), dynamic_batch, opset, metadata or {})
        return verify_onnx(tmp, model, image_size, dynamic_batch, raw_pixels,
                           relative=relative)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``fastvit.*`` metadata :func:`export_onnx` stored (``{}`` for foreign files)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("fastvit.")}


# ---------------------------------------------------------------------------
# TorchScript and torch.export
# ---------------------------------------------------------------------------


def export_torchscript(model: nn.Module, path: str | Path, *, image_size: int,
                       dynamic_batch: bool = False, raw_pixels: bool = False,
                       metadata: dict[str, str] | None = None) -> Verification:
    """``torch.jit.trace`` the model, save it, reload the file and compare with eager."""
    model = model.eval()
    example = example_input(1, image_size, raw_pixels)
    batches = _verify_batches(dynamic_batch)
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
    batches = _verify_batches(dynamic_batch)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: the temp name does not end in .pt2
            torch.export.save(program, fh, extra_files={"fastvit.json": json.dumps(metadata or {})})
        with open(tmp, "rb") as fh:
            loaded = torch.export.load(fh).module()
        inputs = [example_input(b, image_size, raw_pixels, seed=b) for b in batches]
        diff = compare(model, loaded, inputs)
        return check_tolerance("torch.export", diff, TORCH_TOLERANCE, batches)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=list_models(), metavar="NAME",
                        help=f"variant ({', '.join(list_models())})")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="weights of any supported layout, fused or not (default: random "
                        "weights, with a warning)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="input side (default: the variant's, 256)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="variable batch axis (ONNX, TorchScript, torch.export)")
    parser.add_argument("--output", metavar="PATH",
                        help="output file (default: <model>_<size><suffix> in the working dir)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset")
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                        help="ONNX exporter (torchscript: the legacy one)")
    parser.add_argument("--raw-pixels", action="store_true",
                        help="bake ImageNet normalization in: the input is raw 0-255 RGB "
                        "(ONNX, TorchScript, torch.export)")
    parser.add_argument("--image-input", action="store_true",
                        help="Core ML: take an RGB image (normalization baked in)")
    parser.add_argument("--coreml-precision", choices=("fp16", "fp32"), default="fp16",
                        help="Core ML compute precision (fp16 runs on the Neural Engine)")
    group = parser.add_argument_group("int8 (ONNX Runtime static quantization)")
    group.add_argument("--int8", action="store_true",
                       help="also write <output>.int8.onnx (per-channel QDQ) and report "
                       "fp32/int8 agreement")
    group.add_argument("--calibration", metavar="DIR",
                       help="ImageFolder (DIR/<class>/<image>) of calibration images")
    group.add_argument("--calibration-size", type=int, default=128, metavar="N",
                       help="calibration images (spread over the classes)")
    group.add_argument("--eval", metavar="DIR",
                       help="labelled ImageFolder: fp32 and int8 top-1 (class folder i = "
                       "output index i, e.g. sorted ImageNet wnids)")
    group.add_argument("--min-agreement", type=float, metavar="F",
                       help="fail when fp32/int8 top-1 agreement is below F (0..1)")


def _validate(args: argparse.Namespace) -> None:
    if args.image_size is not None and args.image_size < 32:
        raise ConfigError(f"--image-size must be >= 32, got {args.image_size}")
    if args.int8 and args.format != "onnx":
        raise ConfigError("--int8 needs --format onnx (ONNX Runtime quantization)")
    if args.int8 and not args.calibration:
        raise ConfigError("--int8 needs --calibration DIR (an ImageFolder of images)")
    if (args.calibration or args.eval) and not args.int8:
        raise ConfigError("--calibration/--eval are for --int8")
    if args.image_input and args.format != "coreml":
        raise ConfigError("--image-input is for --format coreml (use --raw-pixels otherwise)")
    if args.raw_pixels and args.format == "coreml":
        raise ConfigError("for Core ML use --image-input (normalization is baked in)")
    if args.format == "coreml" and args.dynamic_batch:
        raise ConfigError("Core ML export is batch 1 (batch through Core ML's predict API)")


def main(args: argparse.Namespace) -> int:
    _validate(args)
    dm = load_deploy_model(args.model, args.checkpoint)
    size = args.image_size or dm.image_size
    output = Path(args.output or f"{args.model}_{size}{SUFFIXES[args.format]}")
    model = dm.model
    raw = args.raw_pixels
    if raw:
        model = bake_normalization(model, dm.mean, dm.std)
    meta = export_metadata(dm, size, raw or args.image_input)
    if args.format == "onnx":
        check = export_onnx(model, output, image_size=size, dynamic_batch=args.dynamic_batch,
                            opset=args.opset, exporter=args.exporter, raw_pixels=raw,
                            metadata=meta)
        what = f"ONNX opset {args.opset} ({args.exporter} exporter)"
    elif args.format == "torchscript":
        check = export_torchscript(model, output, image_size=size,
                                   dynamic_batch=args.dynamic_batch, raw_pixels=raw,
                                   metadata=meta)
        what = "TorchScript (traced)"
    elif args.format == "torch-export":
        check = export_program(model, output, image_size=size, dynamic_batch=args.dynamic_batch,
                               raw_pixels=raw, metadata=meta)
        what = "torch.export program"
    else:
        from fastvit.export_coreml import export_coreml

        check = export_coreml(dm, output, image_size=size, image_input=args.image_input,
                              precision=args.coreml_precision, metadata=meta)
        what = f"Core ML mlprogram ({args.coreml_precision})"
    batch = "dynamic batch" if args.dynamic_batch else "batch 1"
    verdict = (f"verified: max |diff| {check.max_abs_diff:.2e} <= {check.tolerance:g}"
               if check is not None else "not run (Core ML predicts on macOS only)")
    print(f"wrote {output}: {what}, fused {dm.name}, {batch}, {size}x{size}, "
          f"{'raw 0-255 RGB' if raw or args.image_input else 'normalized'} input; {verdict}")
    if args.int8:
        from fastvit.quantize import quantize_command

        return quantize_command(args, dm, output, size)
    return 0
