"""ExecuTorch programs (``.pte``, XNNPACK delegate) of a fused FastViT, verified on this machine.

A ``.pte`` file is what PyTorch's on-device runtime loads in an Android or iOS
app. It is made by ``torch.export`` and lowered with the XNNPACK partitioner
(the CPU backend ExecuTorch ships for phones); after writing, the very file is
run in ``executorch.runtime`` (the same C++ runtime, through Python) and
compared with the eager model, so the numbers an app gets are checked here.

int8 is PT2E static quantization with the XNNPACK quantizer (symmetric int8,
per-channel weights), calibrated on real images, scored against the fp32
``.pte`` on a labelled folder. The file carries our ``fastvit.*`` metadata as a
constant method ``fastvit_metadata`` (a JSON string an app can read).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastvit.deploy.calibration import check_gates, int8_sets, is_embedding_model, score_int8
from fastvit.deploy.formats import ExportFormat, ExportJob, Int8Job, scientific
from fastvit.deploy.metadata import transform_for_file
from fastvit.deploy.verification import (
    Verification,
    check_tolerance,
    compare,
    example_input,
    verify_batches,
)
from fastvit.errors import ConfigError
from fastvit.extras import MissingExtraError
from fastvit.files import atomic_path, atomic_write_text
from fastvit.pipeline import Loaded

EXECUTORCH_TOLERANCE = 1e-4  # max |executorch.runtime - eager|, fp32
METADATA_METHOD = "fastvit_metadata"
MAX_BATCH = 64  # dynamic batch: the runtime plans memory for the largest batch


def require_executorch() -> None:
    """Raise a one-line :class:`ConfigError` naming the install when ExecuTorch is missing."""
    try:
        FORMAT.require_installed()
    except MissingExtraError as err:
        raise ConfigError(str(err)) from None


def batch_dims(dynamic_batch: bool) -> tuple[dict, ...] | None:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic_batch else None


def export_graph(model: nn.Module, image_size: int, dynamic_batch: bool, raw_pixels: bool):
    """``torch.export`` the eval-mode model (example batch 2 when the batch is dynamic)."""
    example = example_input(2 if dynamic_batch else 1, image_size, raw_pixels)
    with no_host_conv_heuristics():
        return torch.export.export(model.eval(), (example,),
                                   dynamic_shapes=batch_dims(dynamic_batch))


@contextlib.contextmanager
def no_host_conv_heuristics() -> Iterator[None]:
    """Keep this machine's convolution backends out of the traced shapes.

    Tracing a convolution asks PyTorch which CPU backend it would pick here, and the
    NNPACK / oneDNN choices test ``batch >= 16``: that guard narrows a dynamic batch
    to 1..15 in the ``.pte`` (memory is planned for the upper bound). The phone never
    runs those backends, so they are switched off while exporting and lowering.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TF32 acceleration on top of oneDNN")
        with torch.backends.nnpack.flags(enabled=False), \
                torch.backends.mkldnn.flags(enabled=False):
            yield


def lower_to_pte(program, metadata: dict[str, str] | None = None) -> bytes:
    """Lower an exported program with the XNNPACK partitioner into ``.pte`` bytes.

    The edge-dialect IR verifier is off: it re-interprets the whole graph after every
    pass (half the lowering time, measured on fastvit_t8), and what it would catch, an
    operator the runtime lacks, fails the numeric check of the written file that every
    export runs in ``executorch.runtime``.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    with warnings.catch_warnings(), no_host_conv_heuristics():
        warnings.simplefilter("ignore")  # deprecation chatter from torchao/executorch internals
        edge = to_edge_transform_and_lower(
            program, partitioner=[XnnpackPartitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False),
            constant_methods={METADATA_METHOD: json.dumps(metadata or {})})
        return edge.to_executorch().buffer


def set_threads(threads: int | None) -> None:
    """Size ExecuTorch's (process-wide) CPU thread pool, used by the XNNPACK delegate.

    Call it before loading programs: a loaded XNNPACK method keeps the pool it was
    created with, and resetting the pool under it crashes the process (measured:
    segfaults and aborts at exit). A pool of the right size is left alone.
    """
    if threads:
        from executorch.extension.pybindings.portable_lib import (
            _threadpool_get_thread_count,
            _unsafe_reset_threadpool,
        )

        if _threadpool_get_thread_count() != int(threads):
            _unsafe_reset_threadpool(int(threads))


def pte_runner(path: str | Path) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """``x -> list of output tensors`` for a ``.pte`` file, through ``executorch.runtime``."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")
    return lambda x: list(method.execute([x.detach().float().contiguous()]))


def read_pte_metadata(path: str | Path) -> dict[str, str]:
    """The ``fastvit.*`` metadata stored in a ``.pte`` (``{}`` for foreign files)."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(Path(path))
    if METADATA_METHOD not in program.method_names:
        return {}
    return json.loads(program.load_method(METADATA_METHOD).execute([])[0])


def export_executorch(model: nn.Module, path: str | Path, *, image_size: int,
                      dynamic_batch: bool = False, raw_pixels: bool = False,
                      metadata: dict[str, str] | None = None, relative: bool = False
                      ) -> Verification:
    """Lower the fp32 model to ``path`` (.pte), run the file in ExecuTorch and compare
    with eager (max |diff| <= :data:`EXECUTORCH_TOLERANCE`, relative to the output scale
    with ``relative``); a failed check writes nothing."""
    require_executorch()
    model = model.eval()
    buffer = lower_to_pte(export_graph(model, image_size, dynamic_batch, raw_pixels), metadata)
    batches = verify_batches(dynamic_batch)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer)
        inputs = [example_input(b, image_size, raw_pixels, seed=b) for b in batches]
        diff = compare(model, pte_runner(tmp), inputs, relative)
        what = "ExecuTorch" + (" (relative)" if relative else "")
        return check_tolerance(what, diff, EXECUTORCH_TOLERANCE, batches)


def quantize_pt2e(model: nn.Module, images: Iterable[torch.Tensor], *, image_size: int,
                  dynamic_batch: bool = False, raw_pixels: bool = False):
    """PT2E static int8 (XNNPACK quantizer, symmetric, per-channel weights), calibrated on
    ``images`` (CHW tensors, preprocessed as the file expects); returns the exported
    quantized program, ready for :func:`lower_to_pte`."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=True))
    graph = export_graph(model, image_size, dynamic_batch, raw_pixels).module()
    prepared = prepare_pt2e(graph, quantizer)
    seen = 0
    with torch.no_grad():
        for image in images:
            prepared(image.unsqueeze(0).float())
            seen += 1
    if seen == 0:
        raise ConfigError("no readable calibration images")
    converted = convert_pt2e(prepared)
    example = example_input(2 if dynamic_batch else 1, image_size, raw_pixels)
    with no_host_conv_heuristics():
        return torch.export.export(converted, (example,),
                                   dynamic_shapes=batch_dims(dynamic_batch))


def int8_pte_path(fp32_path: str | Path) -> Path:
    """``model.pte`` -> ``model.int8.pte``."""
    path = Path(fp32_path)
    return path.with_name(path.stem + ".int8" + path.suffix)


def pte_outputs(run: Callable[[torch.Tensor], list[torch.Tensor]],
                images: Sequence[torch.Tensor]) -> np.ndarray:
    """The (N, D) outputs (logits or embeddings) of the images, one at a time."""
    return np.stack([run(x.unsqueeze(0))[0][0].float().numpy() for x in images])


def top1(run: Callable[[torch.Tensor], list[torch.Tensor]], images: Sequence[torch.Tensor]
         ) -> np.ndarray:
    return pte_outputs(run, images).argmax(axis=1)


def quantize_executorch_int8(loaded: Loaded, model: nn.Module, fp32_path: str | Path,
                             calibration: str | Path, *, metadata: dict[str, str],
                             image_size: int, dynamic_batch: bool = False,
                             raw_pixels: bool = False, calibration_size: int = 128,
                             eval_dir: str | Path | None = None,
                             min_agreement: float | None = None,
                             min_cosine: float | None = None) -> dict:
    """Write ``<name>.int8.pte`` next to the verified fp32 ``.pte`` and report agreement.

    ``model`` is what the fp32 file was lowered from (normalization baked in when
    ``raw_pixels``). Calibration and scoring follow the ONNX int8 path
    (:func:`fastvit.deploy.calibration.int8_sets`); the file is written only when
    the top-1 agreement with the fp32 ``.pte`` reaches ``min_agreement`` (an
    embedding model: the gates of :func:`fastvit.deploy.calibration.score_int8`). The
    report also goes to ``<name>.int8.json``.
    """
    require_executorch()
    check_gates(loaded, min_cosine)
    transform = transform_for_file(metadata, loaded.cfg, image_size)
    sets = int8_sets(loaded, transform, calibration, calibration_size=calibration_size,
                     eval_dir=eval_dir)
    program = quantize_pt2e(model, sets.calibration_images(), image_size=image_size,
                            dynamic_batch=dynamic_batch, raw_pixels=raw_pixels)
    method = "int8 PT2E XNNPACK (symmetric, per-channel weights)"
    meta = dict(metadata, **{"fastvit.quantization": f"{method}, {len(sets.picked)} "
                                                     f"calibration images from {calibration}"})
    buffer = lower_to_pte(program, meta)
    out = int8_pte_path(fp32_path)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(buffer)
        report = score_int8(pte_outputs(pte_runner(fp32_path), sets.images),
                            pte_outputs(pte_runner(tmp), sets.images), sets,
                            embedding=is_embedding_model(loaded),
                            min_agreement=min_agreement, min_cosine=min_cosine)
    report.update(fp32=str(fp32_path), int8=str(out), scored_on=sets.scored_on,
                  calibration_images=len(sets.picked), method=method)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    return report


def _export(job: ExportJob) -> Verification:
    return export_executorch(job.module, job.path, **job.tensor_options())


def _quantize(job: Int8Job) -> dict:
    fp32 = job.fp32
    return quantize_executorch_int8(
        fp32.loaded, fp32.module, fp32.path, job.calibration, metadata=fp32.metadata,
        image_size=fp32.image_size, dynamic_batch=fp32.dynamic_batch,
        raw_pixels=fp32.raw_pixels, calibration_size=job.calibration_size,
        eval_dir=job.eval_dir, min_agreement=job.min_agreement, min_cosine=job.min_cosine)


FORMAT = ExportFormat(
    name="executorch", title="ExecuTorch program (XNNPACK delegate)", suffix=".pte",
    extra="executorch", requires=("executorch.exir", "executorch.runtime"),
    verified_by="the written file run in `executorch.runtime` (the C++ runtime phone apps "
                "link), same batches",
    tolerance=scientific(EXECUTORCH_TOLERANCE), export=_export, quantize=_quantize,
    max_batch=MAX_BATCH)
