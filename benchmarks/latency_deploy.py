"""Deployment latency of fastvit_t8 (fused) per runtime, beside timm's fused fastvit_t8.

One process, batch 1, 256x256, random weights (latency does not depend on them).
All candidates are timed *interleaved* (a block of calls of each per round, many
rounds), so load from other processes hits every candidate alike; ratios to timm
eager are the result to read, absolute milliseconds depend on the machine's load.
ONNX Runtime sessions run without thread spinning here: a spinning idle pool
steals the cores of the candidate timed next (it made fp32 ORT look 25% slower
and the int8/fp32 ratio swing between 0.6 and 1.1 from run to run).

    python benchmarks/latency_deploy.py                     # the targets
    python benchmarks/latency_deploy.py --investigate       # what makes ORT fast

ExecuTorch (XNNPACK delegate, the runtime of PyTorch's phone apps) runs beside them, fp32
and int8 (PT2E), when the executorch package is installed; OpenVINO (fp32, bf16 precision
hint, NNCF int8, and on the ONNX Runtime int8 file) when openvino and nncf are.

Targets: best fp32 runtime <= 0.40x timm eager; int8 ORT <= 0.8x fp32 ORT; best int8
runtime <= 0.30x timm eager (int8 accuracy on real images: tests/deploy/test_quantize.py and
tests/deploy/test_executorch.py).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from fastvit.bench.run import cpu_name, time_interleaved
from fastvit.bench.runtimes import PeerUnavailable, executorch_runtime, torch_runtime
from fastvit.bench.timing import time_callable
from fastvit.deploy.onnx_export import export_onnx
from fastvit.deploy.onnx_runtime import ort_session
from fastvit.deploy.quantize import TensorCalibration, quantize_onnx
from fastvit.files import atomic_write_text
from fastvit.models.counting import count_gmacs
from fastvit.pipeline import load_model


def ort_run(path: Path, size: int, threads: int, level: str = "all", spinning: bool = False):
    # By default no busy-waiting pool threads: they would steal the next candidate's cores.
    session = ort_session(path, threads=threads, level=level, spinning=spinning)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def raw_dynamo_export(model, path: Path, size: int) -> None:
    """The dynamo exporter's graph as it comes (no GELU canonicalization): for comparison."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(1, 3, size, size),), dynamo=True,
                                    opset_version=18, input_names=["input"])
    program.save(path, external_data=False)


def int8_model(fp32: Path, out: Path, size: int, activation=None) -> Path:
    g = torch.Generator().manual_seed(0)
    samples = [torch.randn(3, size, size, generator=g) for _ in range(16)]
    kwargs = {"activation_type": activation} if activation is not None else {}
    return quantize_onnx(fp32, out, TensorCalibration(samples, "input", progress=False),
                         **kwargs)


def naive_int8(fp32: Path, out: Path, size: int) -> Path:
    """ONNX Runtime's quantizer with its defaults on the plain fp32 file, for comparison."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(prepared))
    g = torch.Generator().manual_seed(0)
    samples = [torch.randn(3, size, size, generator=g) for _ in range(16)]
    quantize_static(str(prepared), str(out), TensorCalibration(samples, "input", progress=False),
                    quant_format=QuantFormat.QDQ, per_channel=True)
    return out


def gemm_gflops(n: int = 2048) -> float:
    """fp32 GFLOP/s of one large matrix product: what this machine's cores reach at best."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / time_callable(lambda: a @ b, runs=10, warmup=3).median_ms / 1e6


def add_executorch(calls: dict, ours: torch.nn.Module, args: argparse.Namespace,
                   scratch: Path) -> None:
    """ExecuTorch fp32 and int8 rows (skipped with a note when executorch is missing)."""
    cpu = torch.device("cpu")
    for int8 in (False, True):
        folder = scratch / f"et{int(int8)}"
        folder.mkdir()
        try:
            bind = executorch_runtime(ours, args.image_size, folder, args.threads, cpu, int8=int8)
        except PeerUnavailable as why:
            print(f"skipped ExecuTorch: {why}")
            return
        calls[f"ours fused, ExecuTorch {'int8' if int8 else 'fp32'} (XNNPACK)"] = bind(1)


def add_openvino(calls: dict, ours: torch.nn.Module, args: argparse.Namespace,
                 scratch: Path, int8_onnx: Path) -> None:
    """OpenVINO rows: our IR in fp32, with the bf16 precision hint, its NNCF int8, and
    OpenVINO running our ONNX Runtime int8 QDQ file (skipped when openvino is missing)."""
    from fastvit.extras import MissingExtraError

    try:
        from fastvit.deploy import openvino_export as ov

        ov.FORMAT.require_installed(int8=True)
    except MissingExtraError as why:
        print(f"skipped OpenVINO: {why}")
        return
    size, threads = args.image_size, args.threads
    xml = scratch / "t8.xml"
    ov.export_openvino(ours, xml, image_size=size)
    g = torch.Generator().manual_seed(0)
    int8_xml = scratch / "t8.int8.xml"
    ov.save_ir(ov.nncf_quantize(xml, [torch.randn(3, size, size, generator=g)
                                      for _ in range(16)]), int8_xml)
    x = torch.randn(1, 3, size, size)
    for name, path, precision in (("OpenVINO fp32", xml, "fp32"),
                                  ("OpenVINO bf16 hint", xml, "bf16"),
                                  ("OpenVINO int8 (NNCF)", int8_xml, "fp32"),
                                  ("OpenVINO on the ORT int8 QDQ file", int8_onnx, "fp32")):
        run = ov.ir_runner(ov.compile_ir(path, threads=threads, precision=precision,
                                         spin=args.ort_spinning))
        calls[f"ours fused, {name}"] = functools.partial(run, x)


def investigate_int8(calls: dict, fp32: Path, int8: Path, args: argparse.Namespace,
                     scratch: Path, ort_call, ours: torch.nn.Module) -> None:
    """int8 graphs that keep GELU in int8 (benchmarks/int8_variants.py), and PyTorch's own
    int8 path through Inductor."""
    from int8_variants import lut_gelu, sigmoid_gelu

    size, threads = args.image_size, args.threads
    lut = scratch / "t8.lut.onnx"
    lut_gelu(int8, lut)
    calls["ORT int8, exact int8 GELU as a table lookup (Gather)"] = ort_call(lut, size, threads)
    sigmoid_fp32 = scratch / "t8.sigmoid.onnx"
    sigmoid_gelu(fp32, sigmoid_fp32)
    g = torch.Generator().manual_seed(0)
    samples = [torch.randn(3, size, size, generator=g) for _ in range(16)]
    sigmoid_int8 = quantize_onnx(sigmoid_fp32, scratch / "t8.sigmoid.int8.onnx",
                                 TensorCalibration(samples, "input", progress=False),
                                 op_types=("Conv", "Gemm", "MatMul", "Mul", "Sigmoid"))
    calls["ORT int8, GELU as x*sigmoid(1.702x) in int8 (QLinearSigmoid/Mul)"] = ort_call(
        sigmoid_int8, size, threads)
    whole = quantize_onnx(fp32, scratch / "t8.whole.int8.onnx",
                          TensorCalibration(samples, "input", progress=False), split_convs=False,
                          op_types=("Conv", "Gemm", "MatMul"))
    calls["ORT int8, channel-multiplier convs kept whole (float)"] = ort_call(whole, size,
                                                                            threads)
    if not args.no_compile:
        add_inductor_int8(calls, ours, size, samples)


def add_inductor_int8(calls: dict, ours: torch.nn.Module, size: int,
                      samples: list[torch.Tensor]) -> None:
    """PyTorch's own x86 int8 path: PT2E with torchao's X86InductorQuantizer (oneDNN, VNNI),
    compiled by Inductor with freezing, beside its fp32 twin (torchao comes with the
    executorch extra)."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        print("skipped Inductor int8: torchao is not installed")
        return
    import torch._inductor.config as inductor_config

    x = torch.randn(1, 3, size, size)
    with torch.no_grad(), inductor_config.patch(freezing=True):
        fp32 = torch.compile(ours)
        fp32(x)
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(torch.export.export(ours, (x,)).module(), quantizer)
        for sample in samples:
            prepared(sample[None])
        int8 = torch.compile(convert_pt2e(prepared))
        int8(x)

    def no_grad(run):  # compiled for inference: calling with grad mode on recompiles
        return torch.no_grad()(lambda: run(x))
    calls["ours fused, Inductor fp32 (freezing)"] = no_grad(fp32)
    calls["ours fused, Inductor int8 (X86InductorQuantizer, freezing)"] = no_grad(int8)


def build_candidates(args: argparse.Namespace, ours: torch.nn.Module, scratch: Path) -> dict:
    import timm
    from timm.utils.model import reparameterize_model

    size, threads, cpu = args.image_size, args.threads, torch.device("cpu")
    ort_call = functools.partial(ort_run, spinning=args.ort_spinning)
    theirs = reparameterize_model(timm.create_model("fastvit_t8", pretrained=False).eval())
    calls = {
        "timm fastvit_t8 fused, eager": torch_runtime(theirs, size, cpu, torch.float32)(1),
        "ours fused, eager": torch_runtime(ours, size, cpu, torch.float32)(1),
        "ours fused, channels_last": torch_runtime(ours, size, cpu, torch.float32,
                                                   channels_last=True)(1),
    }
    if not args.no_compile:
        calls["ours fused, torch.compile"] = torch_runtime(ours, size, cpu, torch.float32,
                                                           compiled=True)(1)
    fp32 = scratch / "t8.onnx"
    export_onnx(ours, fp32, image_size=size)
    calls["ours fused, ONNX Runtime fp32"] = ort_call(fp32, size, threads)
    int8 = int8_model(fp32, scratch / "t8.int8.onnx", size)
    calls["ours fused, ONNX Runtime int8"] = ort_call(int8, size, threads)
    if not args.no_executorch:
        add_executorch(calls, ours, args, scratch)
    if not args.no_openvino:
        add_openvino(calls, ours, args, scratch, int8)
    if args.investigate:
        from onnxruntime.quantization import QuantType

        unfolded = load_model("fastvit_t8", fold_bn=False).model
        calls["ours fused, BN not folded, eager"] = torch_runtime(unfolded, size, cpu,
                                                                  torch.float32)(1)
        for level in ("basic", "extended"):
            calls[f"ORT fp32, optimization level {level}"] = ort_call(fp32, size, threads, level)
        calls["ORT fp32, 1 intra-op thread"] = ort_call(fp32, size, 1)
        raw = scratch / "t8_raw_dynamo.onnx"
        raw_dynamo_export(ours, raw, size)
        calls["ORT fp32, dynamo graph without GELU fix"] = ort_call(raw, size, threads)
        legacy = scratch / "t8_torchscript.onnx"
        export_onnx(ours, legacy, image_size=size, exporter="torchscript")
        calls["ORT fp32, legacy TorchScript exporter"] = ort_call(legacy, size, threads)
        s8 = int8_model(fp32, scratch / "t8.s8.onnx", size, QuantType.QInt8)
        calls["ORT int8, int8 activations (S8S8)"] = ort_call(s8, size, threads)
        naive = naive_int8(fp32, scratch / "t8.naive.onnx", size)
        calls["ORT int8, naive QDQ (every op, S8S8, erf GELU)"] = ort_call(naive, size, threads)
        investigate_int8(calls, fp32, int8, args, scratch, ort_call, ours)
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--block", type=int, default=5,
                        help="consecutive timed calls per candidate per round")
    parser.add_argument("--ort-spinning", action="store_true",
                        help="let ONNX Runtime's idle threads spin and OpenVINO pin its "
                        "threads (their defaults; use with a large --block)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--investigate", action="store_true",
                        help="also time ORT settings, exporters, int8 types, BN folding")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-executorch", action="store_true", help="skip ExecuTorch")
    parser.add_argument("--no-openvino", action="store_true", help="skip OpenVINO")
    parser.add_argument("--out", default="outputs/latency_deploy")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/latency_deploy.py", *(argv or sys.argv[1:])])
    with tempfile.TemporaryDirectory() as scratch:
        ours = load_model("fastvit_t8").model
        calls = build_candidates(args, ours, Path(scratch))
        timings = time_interleaved(calls, runs=args.runs, warmup=args.warmup, block=args.block)
    base = timings["timm fastvit_t8 fused, eager"].median_ms
    fp32_ort = timings["ours fused, ONNX Runtime fp32"].median_ms
    fp32_names = [n for n in timings if n.startswith("ours fused,") and "int8" not in n
                  and "bf16" not in n]
    best = min(fp32_names, key=lambda n: timings[n].median_ms)
    int8 = timings["ours fused, ONNX Runtime int8"].median_ms
    int8_names = [n for n in timings if n.startswith("ours fused,") and "int8" in n]
    best_int8 = min(int8_names, key=lambda n: timings[n].median_ms)
    et = {k: timings.get(f"ours fused, ExecuTorch {k} (XNNPACK)") for k in ("fp32", "int8")}
    # Roofline: no fp32 runtime can beat the network's FLOPs at large-GEMM speed.
    gflops = gemm_gflops()
    gmacs = count_gmacs(ours, args.image_size)
    floor_ms = 2 * gmacs / gflops * 1e3
    lines = [f"Command: `{command}`", "",
             f"{cpu_name()} ({os.cpu_count()} CPUs), {args.threads} threads, batch 1, "
             f"{args.image_size}x{args.image_size}, {args.runs} timed calls per candidate, "
             f"interleaved in blocks of {args.block}, after {args.warmup} warm-up; "
             f"torch {torch.__version__}.", "",
             "| candidate | median ms | p90 ms | / timm eager |", "|---|---|---|---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t.median_ms:.2f} | {t.p90_ms:.2f} | {t.median_ms / base:.2f} |")
    lines += ["", f"Best fp32 runtime: {best}: {timings[best].median_ms / base:.2f}x timm eager "
              f"(target <= 0.40).",
              f"int8 / fp32 ONNX Runtime: {int8 / fp32_ort:.2f} (target <= 0.80).",
              f"Best int8 runtime: {best_int8}: {timings[best_int8].median_ms / base:.2f}x timm "
              f"eager (target <= 0.30)."]
    if et["fp32"] and et["int8"]:
        lines.append(f"ExecuTorch int8 / fp32: {et['int8'].median_ms / et['fp32'].median_ms:.2f}; "
                     f"ExecuTorch fp32 / ONNX Runtime fp32: "
                     f"{et['fp32'].median_ms / fp32_ort:.2f}.")
    lines += [f"fp32 floor: {gmacs:.2f} GMACs at this machine's 2048x2048 sgemm rate "
              f"({gflops:.0f} GFLOP/s, {args.threads} threads) = {floor_ms:.2f} ms = "
              f"{floor_ms / base:.2f}x timm eager; ONNX Runtime fp32 runs the network at "
              f"{2 * gmacs / fp32_ort * 1e3:.0f} GFLOP/s "
              f"({floor_ms / fp32_ort:.0%} of that rate)."]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    atomic_write_text(out / "latency_deploy.md", text + "\n")
    atomic_write_text(out / "latency_deploy.json", json.dumps({
        "command": command, "timings": {n: t.as_dict() for n, t in timings.items()},
        "best_fp32": best, "best_fp32_over_timm": timings[best].median_ms / base,
        "int8_over_fp32_ort": int8 / fp32_ort, "best_int8": best_int8,
        "best_int8_over_timm": timings[best_int8].median_ms / base, "sgemm_gflops": gflops,
        "gmacs": gmacs, "fp32_floor_ms": floor_ms}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
