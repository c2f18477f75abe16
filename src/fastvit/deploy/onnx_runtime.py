"""ONNX Runtime sessions and the metadata our ONNX files carry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastvit.extras import require


def ort_session(path: str | Path, threads: int | None = None, providers: Sequence[str] = (
        "CPUExecutionProvider",), level: str = "all", spinning: bool = True):
    """An ONNX Runtime session with full graph optimization and ``threads`` intra-op threads.

    ``spinning=False`` stops idle pool threads from busy-waiting after a run: slightly
    slower wake-ups, but they no longer steal cores from whatever runs next (needed
    when timing several runtimes interleaved in one process).
    """
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
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=list(providers))


def ort_runner(session):
    """``x (tensor) -> list of output arrays`` for a single-input session."""
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.detach().cpu().numpy()})


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``fastvit.*`` metadata :func:`export_onnx` stored (``{}`` for foreign files)."""
    onnx = require("onnx", "reading ONNX files")
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("fastvit.")}
