"""What gets benchmarked and how it runs: subjects (ours and peers) and runtimes.

Each runtime gives ``bind(batch) -> zero-argument call`` with its inputs made
outside the timed region, so every runtime is timed the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastvit.bench.peers import (
    TIMM_MOBILECLIP_PEERS,
    TIMM_PREFIX,
    PeerUnavailable,
    Published,
    build_peer,
    is_peer,
    peer_names,
    published_table,
    timm_twin,
)
from fastvit.errors import ConfigError
from fastvit.models import VARIANTS, list_models
from fastvit.pipeline import load_model

RUNTIMES = ("eager", "channels_last", "compile", "onnx", "onnx-int8", "executorch",
            "executorch-int8")


def mobileclip_group() -> list[str]:
    """The MCi towers, each followed by timm's build of it when timm is installed."""
    twins = any(p.startswith(TIMM_PREFIX) for p in peer_names())
    return [n for name in list_models("mobileclip")
            for n in ((name, f"timm:{name}") if twins else (name,))]


GROUPS = {"fastvit": list_models, "mobileclip": mobileclip_group,
          "peers": peer_names,
          "all": lambda: list_models() + peer_names()}
INT8_CALIBRATION_SAMPLES = 8  # random inputs: enough for latency, says nothing of accuracy


def random_fastvit(name: str, *, fused: bool, features_only: bool,
                   pretrained: str | None = None) -> nn.Module:
    """Our variant, the deploy form (fused, BN folded) or train-time, with random weights
    or ``pretrained`` ones (a tag such as ``in1k``, a file, URL or hf-hub id)."""
    return load_model(name, pretrained, fused=fused, features_only=features_only).model.eval()


@dataclass
class Subject:
    """One model to benchmark, in the form it is deployed."""

    name: str
    family: str  # "fastvit" or "peer"
    model: nn.Module
    image_size: int
    form: str  # "fused", "train-time" or "as built"
    published: Published | None


def expand_models(names: Sequence[str]) -> list[str]:
    """Model names and group names (fastvit, mobileclip, peers, all) -> unique model names,
    in order."""
    out: list[str] = []
    for name in names:
        items = GROUPS[name]() if name in GROUPS else [name]
        for item in items:
            if item not in VARIANTS and not is_peer(item):
                raise ConfigError(
                    f"unknown model {item!r}: give a FastViT variant "
                    f"({', '.join(list_models('all'))}), a peer "
                    f"({', '.join(peer_names(True) + list(TIMM_MOBILECLIP_PEERS))})"
                    f" or a group ({', '.join(GROUPS)})")
            if item not in out:
                out.append(item)
    return out


def build_subject(name: str, *, fused: bool, features_only: bool, image_size: int,
                  peer_image_size: int | None, pretrained: str | None = None) -> Subject:
    """Our variant (fused + BN-folded deploy form, or train-time) or a peer. timm's build
    of one of our variants (``timm:fastvit_mci0``) runs at our ``image_size``: the same
    network at the same input; other peers at their published eval size."""
    published = published_table().get(name)
    if name in VARIANTS:
        model = random_fastvit(name, fused=fused, features_only=features_only,
                               pretrained=pretrained)
        return Subject(name, "fastvit", model, image_size, "fused" if fused else "train-time",
                       published)
    model = build_peer(name, fused=fused, features_only=features_only)
    size = peer_image_size or (image_size if timm_twin(name) else
                               published.eval_size if published else 224)
    reparam = name.startswith("timm:") and any(hasattr(m, "reparameterize")
                                               for m in model.modules())
    form = ("fused" if fused else "train-time") if reparam else "as built"
    return Subject(name, "peer", model, size, form, published)


def torch_runtime(model: nn.Module, image_size: int, device: torch.device, dtype: torch.dtype,
                  channels_last: bool = False, compiled: bool = False
                  ) -> Callable[[int], Callable[[], object]]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # A copy: runtimes of one model must not change each other's layout or dtype.
    model = copy.deepcopy(model).to(device=device, dtype=dtype, memory_format=fmt).eval()
    run = torch.compile(model) if compiled else model

    def bind(batch: int) -> Callable[[], object]:
        x = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
        x = x.contiguous(memory_format=fmt)

        def call() -> object:
            with torch.inference_mode():
                return run(x)
        return call
    return bind


def onnx_runtime(model: nn.Module, image_size: int, workdir: Path, threads: int,
                 device: torch.device, int8: bool = False
                 ) -> Callable[[int], Callable[[], object]]:
    """Export (dynamic batch, verified), optionally quantize, and open an ORT session."""
    from fastvit.deploy.onnx_export import export_onnx
    from fastvit.extras import require

    ort = require("onnxruntime", "benchmarking ONNX Runtime")
    from fastvit.deploy.onnx_runtime import ort_session

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise PeerUnavailable("onnxruntime has no CUDAExecutionProvider here "
                                  "(install onnxruntime-gpu); skipped")
        providers.insert(0, "CUDAExecutionProvider")
    model = copy.deepcopy(model).float().to("cpu").eval()
    path = workdir / "model.onnx"
    # Random peers can output ~1e8: their check is relative to the output scale.
    export_onnx(model, path, image_size=image_size, dynamic_batch=True, relative=True)
    if int8:
        from fastvit.deploy.quantize import TensorCalibration, quantize_onnx

        path = quantize_onnx(path, workdir / "model.int8.onnx",
                             TensorCalibration(calibration_samples(image_size), "input",
                                               progress=False))
    session = ort_session(path, threads=threads, providers=providers)
    name = session.get_inputs()[0].name

    def bind(batch: int) -> Callable[[], object]:
        x = np.random.default_rng(0).standard_normal(
            (batch, 3, image_size, image_size)).astype(np.float32)
        return lambda: session.run(None, {name: x})
    return bind


def calibration_samples(image_size: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, image_size, image_size, generator=g)
            for _ in range(INT8_CALIBRATION_SAMPLES)]


def executorch_runtime(model: nn.Module, image_size: int, workdir: Path, threads: int,
                       device: torch.device, int8: bool = False
                       ) -> Callable[[int], Callable[[], object]]:
    """Lower to a ``.pte`` (XNNPACK, dynamic batch, verified; int8: PT2E) and load it in
    ``executorch.runtime`` with ``threads`` pool threads."""
    try:
        from fastvit.deploy import executorch_export as et

        et.require_executorch()
    except ConfigError as err:
        raise PeerUnavailable(str(err)) from err
    if device.type != "cpu":
        raise PeerUnavailable("ExecuTorch's XNNPACK delegate runs on the CPU; skipped")
    model = copy.deepcopy(model).float().to("cpu").eval()
    et.set_threads(threads)  # before any program is loaded (see set_threads)
    path = workdir / "model.pte"
    et.export_executorch(model, path, image_size=image_size, dynamic_batch=True, relative=True)
    if int8:
        program = et.quantize_pt2e(model, calibration_samples(image_size),
                                   image_size=image_size, dynamic_batch=True)
        path = workdir / "model.int8.pte"
        path.write_bytes(et.lower_to_pte(program))
    run = et.pte_runner(path)

    def bind(batch: int) -> Callable[[], object]:
        x = torch.randn(batch, 3, image_size, image_size,
                        generator=torch.Generator().manual_seed(0))
        return lambda: run(x)
    return bind


def make_runtime(subject: Subject, runtime: str, *, device: torch.device, half: bool,
                 threads: int, workdir: Path) -> Callable[[int], Callable[[], object]]:
    dtype = torch.float16 if half else torch.float32
    if runtime in ("eager", "channels_last", "compile"):
        return torch_runtime(subject.model, subject.image_size, device, dtype,
                             channels_last=runtime != "eager" and device.type != "mps",
                             compiled=runtime == "compile")
    if half:
        raise PeerUnavailable("--half is for the PyTorch runtimes; ONNX Runtime and ExecuTorch "
                              "run fp32/int8")
    if runtime.startswith("executorch"):
        return executorch_runtime(subject.model, subject.image_size, workdir, threads, device,
                                  int8=runtime == "executorch-int8")
    return onnx_runtime(subject.model, subject.image_size, workdir, threads, device,
                        int8=runtime == "onnx-int8")
