"""ONNX Runtime sessions and the metadata our ONNX files carry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastvit.deploy.spinning import ort_spin_entries
from fastvit.extras import require


def ort_session_options(threads: int | None = None, level: str = "all",
                        spinning: bool | None = None):
    """The ``SessionOptions`` of :func:`ort_session` (graph optimization, threads, spinning)."""
    ort = require("onnxruntime", "ONNX Runtime (--runtime onnx, int8, benchmarks)")
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
    for key, value in ort_spin_entries(spinning).items():
        options.add_session_config_entry(key, value)
    return options


def ort_session(path: str | Path, threads: int | None = None, providers: Sequence[str] = (
        "CPUExecutionProvider",), level: str = "all", spinning: bool | None = None):
    """An ONNX Runtime session with full graph optimization and ``threads`` intra-op threads.

    Idle pool threads do not busy-wait after a run unless ``spinning`` (default: the
    policy of :mod:`fastvit.deploy.spinning`, off unless ``FASTVIT_SPIN=1``): slightly
    slower wake-ups, but they no longer steal cores from whatever runs next (other
    processes, or the next runtime timed in this one).
    """
    ort = require("onnxruntime", "ONNX Runtime (--runtime onnx, int8, benchmarks)")
    return ort.InferenceSession(str(path), ort_session_options(threads, level, spinning),
                                providers=list(providers))


def ort_runner(session):
    """``x (tensor) -> list of output arrays`` for a single-input session."""
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.detach().cpu().numpy()})


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``fastvit.*`` metadata :func:`export_onnx` stored (``{}`` for foreign files)."""
    onnx = require("onnx", "reading ONNX files")
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("fastvit.")}
