"""What gets benchmarked and how it runs: subjects (ours and peers) and runtimes.

Each runtime is a :class:`Runtime`: ``runtime(batch)`` gives a zero-argument call
with its inputs made outside the timed region, so every runtime is timed the same
way, and ``runtime.forward(x)`` runs given images (agreement checks of ``--pick``).
ONNX Runtime and OpenVINO follow the good-neighbour policy
(:mod:`fastvit.deploy.spinning`: no spinning unless ``spin``).
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
            "executorch-int8", "openvino", "openvino-bf16", "openvino-int8")
#: what each runtime runs, in words (the ``precision`` of a bench row)
PRECISION = {"eager": "fp32", "channels_last": "fp32", "compile": "fp32", "onnx": "fp32",
             "onnx-int8": "int8 QDQ (ORT quantizer)", "executorch": "fp32",
             "executorch-int8": "int8 PT2E (XNNPACK)",
             "openvino": "fp32 IR, INFERENCE_PRECISION_HINT f32",
             "openvino-bf16": "fp32 IR, INFERENCE_PRECISION_HINT bf16",
             "openvino-int8": "int8 IR (NNCF), INFERENCE_PRECISION_HINT f32"}


@dataclass
class Runtime:
    """A model ready to run in one runtime: ``run(prepared input)`` and how a CPU float
    tensor becomes its input (device, dtype, layout, numpy)."""

    run: Callable[[object], object]
    prepare: Callable[[torch.Tensor], object]
    image_size: int
    seed: int = 0

    def __call__(self, batch: int) -> Callable[[], object]:
        """A zero-argument call on a random ``batch`` prepared outside the timed region."""
        x = self.prepare(torch.randn(batch, 3, self.image_size, self.image_size,
                                     generator=torch.Generator().manual_seed(self.seed)))
        return lambda: self.run(x)

    def forward(self, x: torch.Tensor) -> np.ndarray:
        """The first output of ``x`` (a CPU float batch) as a float32 array."""
        out = self.run(self.prepare(x))
        first = out[0] if isinstance(out, list | tuple) else out
        if isinstance(first, torch.Tensor):
            return first.detach().float().cpu().numpy()
        return np.asarray(first, dtype=np.float32)


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
                  channels_last: bool = False, compiled: bool = False) -> Runtime:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # A copy: runtimes of one model must not change each other's layout or dtype.
    model = copy.deepcopy(model).to(device=device, dtype=dtype, memory_format=fmt).eval()
    compiled_model = torch.compile(model) if compiled else model

    def run(x: torch.Tensor) -> object:
        with torch.inference_mode():
            return compiled_model(x)
    return Runtime(run, lambda x: x.to(device=device, dtype=dtype).contiguous(
        memory_format=fmt), image_size)


def onnx_runtime(model: nn.Module, image_size: int, workdir: Path, threads: int,
                 device: torch.device, int8: bool = False, spin: bool | None = None,
                 calibration: Sequence[torch.Tensor] | None = None) -> Runtime:
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
                             TensorCalibration(calibration or calibration_samples(image_size),
                                               "input", progress=False))
    session = ort_session(path, threads=threads, providers=providers, spinning=spin)
    name = session.get_inputs()[0].name
    return Runtime(lambda x: session.run(None, {name: x}),
                   lambda x: x.numpy().astype(np.float32), image_size)


def calibration_samples(image_size: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, image_size, image_size, generator=g)
            for _ in range(INT8_CALIBRATION_SAMPLES)]


def executorch_runtime(model: nn.Module, image_size: int, workdir: Path, threads: int,
                       device: torch.device, int8: bool = False,
                       calibration: Sequence[torch.Tensor] | None = None) -> Runtime:
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
        program = et.quantize_pt2e(model, calibration or calibration_samples(image_size),
                                   image_size=image_size, dynamic_batch=True)
        path = workdir / "model.int8.pte"
        path.write_bytes(et.lower_to_pte(program))
    return Runtime(et.pte_runner(path), lambda x: x.float().contiguous(), image_size)


def openvino_runtime(model: nn.Module, image_size: int, workdir: Path, threads: int,
                     device: torch.device, precision: str = "fp32", int8: bool = False,
                     spin: bool | None = None,
                     calibration: Sequence[torch.Tensor] | None = None) -> Runtime:
    """Convert to an OpenVINO IR (dynamic batch, verified; int8: NNCF on random inputs) and
    compile it for the CPU with ``threads`` threads and the ``precision`` hint at each
    batch size it runs, before the timed calls (``IrRunner``: compiled with a dynamic
    batch, OpenVINO 2026.4 ran the int8 IR wrongly, 9% top-1 agreement in ``--pick``)."""
    from fastvit.deploy import openvino_export as ov
    from fastvit.extras import MissingExtraError

    try:
        ov.FORMAT.require_installed(int8=int8)
    except MissingExtraError as err:
        raise PeerUnavailable(str(err)) from err
    if device.type != "cpu":
        raise PeerUnavailable("OpenVINO rows run on the CPU plugin; skipped")
    model = copy.deepcopy(model).float().to("cpu").eval()
    path = workdir / "model.xml"
    ov.export_openvino(model, path, image_size=image_size, dynamic_batch=True, relative=True)
    if int8:
        quantized = ov.nncf_quantize(path, calibration or calibration_samples(image_size))
        path = workdir / "model.int8.xml"
        ov.save_ir(quantized, path)
    run = ov.IrRunner(path, threads=threads, precision=precision, spin=spin)
    return Runtime(run, run.warm, image_size)


def make_runtime(subject: Subject, runtime: str, *, device: torch.device, half: bool,
                 threads: int, workdir: Path, spin: bool | None = None,
                 calibration: Sequence[torch.Tensor] | None = None) -> Runtime:
    """``runtime`` of ``subject``; int8 runtimes calibrate on ``calibration`` (CHW tensors,
    preprocessed) or, without it, on random inputs (enough for latency only)."""
    dtype = torch.float16 if half else torch.float32
    if runtime in ("eager", "channels_last", "compile"):
        return torch_runtime(subject.model, subject.image_size, device, dtype,
                             channels_last=runtime != "eager" and device.type != "mps",
                             compiled=runtime == "compile")
    if half:
        raise PeerUnavailable("--half is for the PyTorch runtimes; ONNX Runtime, ExecuTorch "
                              "and OpenVINO run fp32/bf16/int8")
    if runtime.startswith("executorch"):
        return executorch_runtime(subject.model, subject.image_size, workdir, threads, device,
                                  int8=runtime == "executorch-int8", calibration=calibration)
    if runtime.startswith("openvino"):
        return openvino_runtime(subject.model, subject.image_size, workdir, threads, device,
                                precision="bf16" if runtime == "openvino-bf16" else "fp32",
                                int8=runtime == "openvino-int8", spin=spin,
                                calibration=calibration)
    return onnx_runtime(subject.model, subject.image_size, workdir, threads, device,
                        int8=runtime == "onnx-int8", spin=spin, calibration=calibration)
