"""OpenVINO IR (``.xml`` + ``.bin``) of a fused FastViT, verified in OpenVINO's runtime.

The fused model is ``torch.export``-ed and converted by OpenVINO's own converter
(``openvino.convert_model`` on the exported program); the input is named ``input``,
the outputs as in our ONNX files (``logits``, or ``feature_0..3``), and the
``fastvit.*`` metadata rides in the IR's ``rt_info`` (:func:`read_ir_metadata`).
The pair is written to a scratch folder beside the destination, compiled and run
on this machine's CPU with an explicit f32 precision hint (a CPU with bf16 would
otherwise run it in bf16), compared with eager, and only then moved into place:
a failed check leaves neither file.

int8 is NNCF post-training quantization (``nncf.quantize``) of the verified fp32 IR
on real images, judged against it exactly like the other int8 paths
(:mod:`fastvit.deploy.calibration`). The CPU plugin runs it with VNNI / AMX int8
kernels where the CPU has them.

Our runtimes never compile an IR with a dynamic batch axis: :func:`compile_ir` fixes it
to the batch being run (:class:`IrRunner` compiles once per batch size). In OpenVINO
2026.4 the CPU plugin runs an NNCF int8 IR compiled with batch -1 wrongly on batches of
one: the test suite's digits model agrees 97% with fp32 top-1 compiled at batch 1 and
11% compiled with batch -1 (batches of 2 or more agree 97% either way; fp32 IRs agree
with eager to 1e-4). The dynamic int8 IR is still written when asked for; its report
also scores it compiled dynamically (``dynamic_compile_top1_agreement``, one image at a
time) and a warning names a gap.

Precision hints (:data:`PRECISIONS`) choose how an fp32 IR runs: ``fp32`` (exact) or
``bf16`` (the CPU's bf16 units; AMX on recent Xeons).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastvit.deploy.calibration import check_gates, int8_sets, is_embedding_model, score_int8
from fastvit.deploy.formats import ExportFormat, ExportJob, Int8Job, scientific
from fastvit.deploy.metadata import transform_for_file
from fastvit.deploy.spinning import spin_enabled
from fastvit.deploy.verification import (
    Verification,
    check_tolerance,
    compare,
    example_input,
    output_names,
    verify_batches,
)
from fastvit.errors import ConfigError, DataError, OutputWriteError
from fastvit.extras import require
from fastvit.files import STORAGE_ERRNOS, atomic_write_text
from fastvit.pipeline import Loaded

OPENVINO_TOLERANCE = 1e-4  # max |OpenVINO fp32 - eager|
#: --precision values -> OpenVINO's INFERENCE_PRECISION_HINT
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
METADATA_KEY = "fastvit"  # rt_info section holding the fastvit.* metadata
_FEATURE = "OpenVINO (--format openvino, --runtime openvino)"

log = logging.getLogger(__name__)


def openvino():
    """The ``openvino`` module, or one line naming ``fastvit[openvino]``."""
    return require("openvino", _FEATURE, "openvino")


@functools.lru_cache(maxsize=1)
def core():
    """One ``openvino.Core`` per process, never dropped: it caches plugins, and the CPU
    plugin of OpenVINO 2026.4 swaps the compiling thread's alternate signal stack for one
    of its own, freed with that ``Core``; Cores dropped out of order leave the thread on
    freed memory and the next signal handled there kills the process with SIGSEGV
    (docs/deployment.md, "One Core per process")."""
    return openvino().Core()


def cpu_properties(threads: int | None = None, precision: str = "fp32",
                   spin: bool | None = None) -> dict[str, object]:
    """CPU plugin properties for one latency-bound model: ``threads`` inference threads,
    one stream, the precision hint, and the good-neighbour policy
    (:mod:`fastvit.deploy.spinning`): threads are not pinned to cores and no cores are
    reserved unless spinning is asked for (a dedicated host)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown OpenVINO precision {precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    dedicated = spin_enabled(spin)
    props: dict[str, object] = {
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
        "ENABLE_CPU_PINNING": dedicated, "ENABLE_CPU_RESERVATION": False,
    }
    if threads:
        props["INFERENCE_NUM_THREADS"] = int(threads)
    return props


def with_batch(model, batch: int):
    """``model`` (an ``openvino.Model``) with its dynamic batch axis fixed to ``batch``
    (a reshaped copy; a fixed-batch model is returned as it is)."""
    shape = model.inputs[0].get_partial_shape()
    if not shape[0].is_dynamic:
        return model
    model = model.clone()
    shape[0] = openvino().Dimension(batch)
    model.reshape({model.inputs[0]: shape})
    return model


def compile_ir(source: str | Path | object, *, batch: int | None = None, threads: int | None = None,
               precision: str = "fp32", spin: bool | None = None):
    """The IR (a path or an ``openvino.Model``) compiled for this machine's CPU (see
    :func:`cpu_properties`), a dynamic batch axis fixed to ``batch`` first: OpenVINO
    2026.4 runs NNCF int8 IRs compiled with a dynamic batch wrongly (module docstring).
    ``batch=None`` compiles the shape as it is."""
    model = core().read_model(str(source)) if isinstance(source, str | Path) else source
    if batch is not None:
        model = with_batch(model, batch)
    return core().compile_model(model, "CPU", cpu_properties(threads, precision, spin))


def compiled_runner(compiled) -> Callable[[torch.Tensor], list[np.ndarray]]:
    """``x (tensor) -> list of output arrays`` for a compiled single-input model."""
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> list[np.ndarray]:
        result = request.infer([np.ascontiguousarray(x.detach().cpu().numpy(),
                                                     dtype=np.float32)])
        return [np.array(result[out]) for out in compiled.outputs]
    return run


class IrRunner:
    """``runner(x) -> list of output arrays``: the IR compiled at ``x``'s batch size, once
    per size (:func:`compile_ir`: never with a dynamic batch), with the thread and
    precision policy of :func:`cpu_properties`."""

    def __init__(self, source: str | Path | object, *, threads: int | None = None,
                 precision: str = "fp32", spin: bool | None = None) -> None:
        self.model = core().read_model(str(source)) if isinstance(source, str | Path) else source
        self.options = {"threads": threads, "precision": precision, "spin": spin}
        self.runs: dict[int, tuple[object, Callable[[torch.Tensor], list[np.ndarray]]]] = {}

    def compile(self, batch: int):
        """The model compiled at ``batch`` (cached)."""
        if batch not in self.runs:
            compiled = compile_ir(self.model, batch=batch, **self.options)
            self.runs[batch] = (compiled, compiled_runner(compiled))
        return self.runs[batch][0]

    def warm(self, x: torch.Tensor) -> torch.Tensor:
        """Compile for ``x``'s batch size now (outside a timed region); returns ``x``."""
        self.compile(len(x))
        return x

    def __call__(self, x: torch.Tensor) -> list[np.ndarray]:
        self.compile(len(x))
        return self.runs[len(x)][1](x)


def read_ir_metadata(path: str | Path) -> dict[str, str]:
    """The ``fastvit.*`` metadata of an IR written by :func:`export_openvino` (``{}`` for
    foreign files)."""
    model = core().read_model(str(path))
    if not model.has_rt_info([METADATA_KEY]):
        return {}
    section = model.get_rt_info()[METADATA_KEY]
    return {f"fastvit.{key}": str(value.astype(str)) for key, value in section.items()}


@contextlib.contextmanager
def no_telemetry() -> Iterator[None]:
    """Run OpenVINO's converter and NNCF without their usage telemetry.

    Unless the user opted out (``~/intel/openvino_telemetry``), ``openvino.convert_model``
    and ``nncf.quantize`` send events through ``openvino_telemetry``, whose Linux backend
    forks the calling process from a thread for each one (to bound a hanging HTTP
    request): measured, 315 forks of a 4 GB test process in one test run. For the duration
    of our calls the converter uses its own no-op stub (``openvino.tools.ovc.telemetry_stub``)
    and NNCF its ``NNCFTelemetryStub``: nothing is sent from our calls (``import openvino``
    itself still sends one event)."""
    from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils, utils

    patched = [(module, "tm", telemetry_stub) for module in (convert_impl, telemetry_utils, utils)]
    try:
        from nncf.telemetry import decorator, wrapper
        patched.append((decorator, "telemetry", wrapper.NNCFTelemetryStub()))
    except ImportError:
        pass  # no NNCF: fp32 only
    saved = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, stub in patched:
        setattr(module, name, stub)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def convert(model: nn.Module, *, image_size: int, dynamic_batch: bool, raw_pixels: bool,
            metadata: dict[str, str] | None = None):
    """``torch.export`` the eval-mode model and convert it with ``openvino.convert_model``:
    input ``input`` (N, 3, S, S), N dynamic or 1, outputs named as the ONNX file's."""
    ov = openvino()
    example = example_input(2 if dynamic_batch else 1, image_size, raw_pixels)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic)
        with no_telemetry():
            ov_model = ov.convert_model(program)
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape(
        [-1 if dynamic_batch else 1, 3, image_size, image_size])})
    ov_model.inputs[0].get_tensor().set_names({"input"})
    for output, name in zip(ov_model.outputs, output_names(model), strict=True):
        output.get_tensor().set_names({name})
    write_metadata(ov_model, metadata or {})
    return ov_model


def write_metadata(ov_model, metadata: dict[str, str]) -> None:
    """Store ``fastvit.KEY`` entries in the model's rt_info (section ``fastvit``)."""
    for key, value in metadata.items():
        ov_model.set_rt_info(str(value), [METADATA_KEY, key.removeprefix("fastvit.")])


def int8_ir_path(fp32_path: str | Path) -> Path:
    """``model.xml`` -> ``model.int8.xml`` (its weights: ``model.int8.bin``)."""
    path = Path(fp32_path)
    return path.with_name(path.stem + ".int8" + path.suffix)


def bin_path(xml: str | Path) -> Path:
    return Path(xml).with_suffix(".bin")


def check_ir_name(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"an OpenVINO IR is an .xml file (with its .bin): got {path}")
    return path


@contextlib.contextmanager
def atomic_ir(path: str | Path) -> Iterator[Path]:
    """Yield an ``.xml`` path in a scratch folder beside ``path``; on success move the
    ``.xml`` and its ``.bin`` into place (the ``.bin`` first, so an ``.xml`` never names
    weights that are not there). The scratch folder is removed either way."""
    path = check_ir_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        if err.errno not in STORAGE_ERRNOS:
            raise
        raise OutputWriteError(f"cannot write {path}: {err.strerror}; nothing was "
                               f"written") from err
    try:
        tmp = scratch / path.name
        yield tmp
        os.replace(bin_path(tmp), bin_path(path))
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in STORAGE_ERRNOS:
            raise
        raise OutputWriteError(f"cannot write {path}: {err.strerror}") from err
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_ir(ov_model, xml: Path) -> None:
    """Write the IR uncompressed (fp32 weights: the file is verified at 1e-4)."""
    openvino().save_model(ov_model, str(xml), compress_to_fp16=False)


def verify_ir(path: str | Path, model: nn.Module, image_size: int, dynamic_batch: bool,
              raw_pixels: bool = False, relative: bool = False) -> Verification:
    """Run the IR in OpenVINO (f32 hint) on random input and compare with eager."""
    batches = verify_batches(dynamic_batch)
    inputs = [example_input(b, image_size, raw_pixels, seed=b) for b in batches]
    diff = compare(model, IrRunner(path, precision="fp32"), inputs, relative)
    what = "OpenVINO" + (" (relative)" if relative else "")
    return check_tolerance(what, diff, OPENVINO_TOLERANCE, batches)


def export_openvino(model: nn.Module, path: str | Path, *, image_size: int,
                    dynamic_batch: bool = False, raw_pixels: bool = False,
                    metadata: dict[str, str] | None = None, relative: bool = False
                    ) -> Verification:
    """Convert the fp32 model to the IR ``path`` (+ ``.bin``), run it in OpenVINO and
    compare with eager (max |diff| <= :data:`OPENVINO_TOLERANCE`, relative to the output
    scale with ``relative``); a failed check writes nothing."""
    openvino()
    check_ir_name(path)  # before any work
    model = model.eval()
    ov_model = convert(model, image_size=image_size, dynamic_batch=dynamic_batch,
                       raw_pixels=raw_pixels, metadata=metadata)
    with atomic_ir(path) as tmp:
        save_ir(ov_model, tmp)
        return verify_ir(tmp, model, image_size, dynamic_batch, raw_pixels, relative)


def ir_outputs(run: Callable[[torch.Tensor], list[np.ndarray]],
               images: Sequence[torch.Tensor]) -> np.ndarray:
    """The (N, D) outputs (logits or embeddings) of the images, one at a time."""
    return np.stack([run(x.unsqueeze(0))[0][0] for x in images])


def nncf_quantize(fp32_path: str | Path, images: Sequence[torch.Tensor]):
    """NNCF post-training int8 of the IR at ``fp32_path``, calibrated on ``images`` (CHW
    tensors preprocessed as the file expects); returns the quantized ``openvino.Model``."""
    nncf = require("nncf", "int8 with --format openvino", "openvino")
    if not images:
        raise DataError("no readable calibration images")
    ov_model = core().read_model(str(fp32_path))
    data = nncf.Dataset([x.unsqueeze(0).numpy().astype(np.float32) for x in images])
    with warnings.catch_warnings(), nncf_engines_follow_policy(), no_telemetry():
        warnings.simplefilter("ignore")
        return nncf.quantize(ov_model, data, subset_size=len(images),
                             preset=nncf.QuantizationPreset.PERFORMANCE)


@contextlib.contextmanager
def nncf_engines_follow_policy() -> Iterator[None]:
    """Make the models NNCF compiles to collect statistics follow our thread policy
    (:func:`cpu_properties`, f32): NNCF compiles them with OpenVINO's defaults, threads
    pinned to every core."""
    engine = require("nncf.openvino.engine", "int8 with --format openvino", "openvino")
    native = engine.OVNativeEngine
    original = native.__init__

    def __init__(self, model, use_fp32_precision: bool = True) -> None:
        compiled = core().compile_model(model, "CPU", cpu_properties())
        self.engine = engine.OVCompiledModelEngine(compiled, engine.model_has_state(model))

    native.__init__ = __init__
    try:
        yield
    finally:
        native.__init__ = original


def quantize_openvino_int8(loaded: Loaded, fp32_path: str | Path, calibration: str | Path, *,
                           metadata: dict[str, str], image_size: int,
                           calibration_size: int = 128, eval_dir: str | Path | None = None,
                           min_agreement: float | None = None,
                           min_cosine: float | None = None) -> dict:
    """Write ``<name>.int8.xml`` (+ ``.bin``) next to the verified fp32 IR and report
    fp32/int8 agreement, as :func:`fastvit.deploy.quantize.quantize_int8` does for ONNX
    (an embedding model: cosine similarity and nearest-neighbour agreement); nothing
    is written when a gate is not met. The report also goes to ``<name>.int8.json``."""
    check_gates(loaded, min_cosine)
    transform = transform_for_file(metadata, loaded.cfg, image_size)
    sets = int8_sets(loaded, transform, calibration, calibration_size=calibration_size,
                     eval_dir=eval_dir)
    calibration_images = list(sets.calibration_images())
    quantized = nncf_quantize(fp32_path, calibration_images)
    method = "int8 NNCF post-training (OpenVINO, performance preset)"
    write_metadata(quantized, dict(metadata, **{
        "fastvit.quantization": f"{method}, {len(calibration_images)} calibration images "
                                f"from {calibration}"}))
    out = int8_ir_path(fp32_path)
    embedding = is_embedding_model(loaded)
    with atomic_ir(out) as tmp:
        save_ir(quantized, tmp)
        fp32 = ir_outputs(IrRunner(fp32_path), sets.images)
        report = score_int8(fp32, ir_outputs(IrRunner(tmp), sets.images), sets,
                            embedding=embedding, min_agreement=min_agreement,
                            min_cosine=min_cosine)
        if quantized.inputs[0].get_partial_shape()[0].is_dynamic:
            dynamic = score_int8(fp32, ir_outputs(compiled_runner(compile_ir(tmp)), sets.images),
                                 sets, embedding=embedding, min_agreement=None, min_cosine=None)
            report.update(dynamic_compile_scores(report, dynamic, embedding))
    report.update(fp32=str(fp32_path), int8=str(out), scored_on=sets.scored_on,
                  calibration_images=len(calibration_images), method=method)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    return report


def dynamic_compile_scores(static: dict, dynamic: dict, embedding: bool) -> dict:
    """``dynamic_compile_<metric>``: the int8 IR's headline score compiled with its dynamic
    batch (as a user calling ``compile_model`` on it would), beside the fixed-batch score
    the report gives; more than 1 point apart logs one warning line (module docstring)."""
    key = "cosine_mean" if embedding else "top1_agreement"
    what = "mean embedding cosine" if embedding else "top-1 agreement with fp32"
    if abs(static[key] - dynamic[key]) > 0.01:
        log.warning("warning: with a dynamic batch OpenVINO %s computes this int8 IR "
                    "differently (%.1f%% vs %.1f%% %s); reshape the model to a fixed batch "
                    "before compile_model (fastvit predict and bench do)", ov_version(),
                    100 * dynamic[key], 100 * static[key], what)
    return {f"dynamic_compile_{key}": dynamic[key]}


def ov_version() -> str:
    """``2026.4.1`` of ``2026.4.1-22982-e213a147257-releases/2026/4``."""
    return openvino().get_version().split("-")[0]


def _export(job: ExportJob) -> Verification:
    return export_openvino(job.module, job.path, **job.tensor_options())


def _quantize(job: Int8Job) -> dict:
    fp32 = job.fp32
    return quantize_openvino_int8(
        fp32.loaded, fp32.path, job.calibration, metadata=fp32.metadata,
        image_size=fp32.image_size, calibration_size=job.calibration_size,
        eval_dir=job.eval_dir, min_agreement=job.min_agreement, min_cosine=job.min_cosine)


FORMAT = ExportFormat(
    name="openvino", title="OpenVINO IR (.xml + .bin)", suffix=".xml", extra="openvino",
    requires=("openvino",), int8_requires=("nncf",),
    verified_by="the written IR compiled by OpenVINO's CPU plugin (f32 precision hint) on "
                "random input, batch 1 (and 4 with `--dynamic-batch`)",
    tolerance=scientific(OPENVINO_TOLERANCE), export=_export, quantize=_quantize)
