"""``fastvit bench``: latency and throughput of FastViT and its peers, per runtime.

Latency is the median (and p90) over ``--runs`` timed calls after ``--warmup``
untimed ones, at ``--batch-size`` (1 by default); throughput is images/s at
``--throughput-batch``. On CUDA each call is timed with CUDA events. Results go
to ``bench.json``, ``bench.md`` and ``pareto.png`` (latency against published
ImageNet top-1: the paper's Figure 1 on this machine), each with the exact
command that reproduces them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fastvit.errors import ConfigError
from fastvit.io import atomic_write_text
from fastvit.model import VARIANTS, create_model, list_models
from fastvit.peers import (
    PeerUnavailable,
    Published,
    build_peer,
    is_peer,
    peer_names,
    published_table,
)
from fastvit.timing import Timing, time_callable

RUNTIMES = ("eager", "channels_last", "compile", "onnx", "onnx-int8")
GROUPS = {"fastvit": list_models, "peers": peer_names,
          "all": lambda: list_models() + peer_names()}
INT8_CALIBRATION_SAMPLES = 8  # random inputs: enough for latency, says nothing of accuracy


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
    """Model names and group names (fastvit, peers, all) -> unique model names, in order."""
    out: list[str] = []
    for name in names:
        items = GROUPS[name]() if name in GROUPS else [name]
        for item in items:
            if item not in VARIANTS and not is_peer(item):
                raise ConfigError(
                    f"unknown model {item!r}: give a FastViT variant ({', '.join(list_models())})"
                    f", a peer ({', '.join(peer_names(True))}) or a group ({', '.join(GROUPS)})")
            if item not in out:
                out.append(item)
    return out


def build_subject(name: str, *, fused: bool, features_only: bool, image_size: int,
                  peer_image_size: int | None) -> Subject:
    """Our variant (fused + BN-folded deploy form, or train-time) or a peer."""
    published = published_table().get(name)
    if name in VARIANTS:
        if fused:
            from fastvit.deploy import load_deploy_model

            model = load_deploy_model(name, features_only=features_only, quiet=True).model
        else:
            model = create_model(name, features_only=features_only).eval()
        return Subject(name, "fastvit", model, image_size, "fused" if fused else "train-time",
                       published)
    model = build_peer(name, fused=fused, features_only=features_only)
    size = peer_image_size or (published.eval_size if published else 224)
    reparam = name.startswith("timm:") and any(hasattr(m, "reparameterize")
                                               for m in model.modules())
    form = ("fused" if fused else "train-time") if reparam else "as built"
    return Subject(name, "peer", model, size, form, published)


# ---------------------------------------------------------------------------
# Runtimes: each gives ``bind(batch) -> zero-argument call`` (inputs made outside timing)
# ---------------------------------------------------------------------------


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
    import onnxruntime as ort

    from fastvit.export import export_onnx, ort_session

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
        from fastvit.quantize import TensorCalibration, quantize_onnx

        g = torch.Generator().manual_seed(0)
        samples = [torch.randn(3, image_size, image_size, generator=g)
                   for _ in range(INT8_CALIBRATION_SAMPLES)]
        path = quantize_onnx(path, workdir / "model.int8.onnx",
                             TensorCalibration(samples, "input", progress=False))
    session = ort_session(path, threads=threads, providers=providers)
    name = session.get_inputs()[0].name

    def bind(batch: int) -> Callable[[], object]:
        x = np.random.default_rng(0).standard_normal(
            (batch, 3, image_size, image_size)).astype(np.float32)
        return lambda: session.run(None, {name: x})
    return bind


def make_runtime(subject: Subject, runtime: str, *, device: torch.device, half: bool,
                 threads: int, workdir: Path) -> Callable[[int], Callable[[], object]]:
    dtype = torch.float16 if half else torch.float32
    if runtime in ("eager", "channels_last", "compile"):
        return torch_runtime(subject.model, subject.image_size, device, dtype,
                             channels_last=runtime != "eager" and device.type != "mps",
                             compiled=runtime == "compile")
    if half:
        raise PeerUnavailable("--half is for the PyTorch runtimes; ONNX Runtime runs fp32/int8")
    return onnx_runtime(subject.model, subject.image_size, workdir, threads, device,
                        int8=runtime == "onnx-int8")


def time_interleaved(calls: dict[str, Callable[[], object]], *, runs: int, warmup: int,
                     block: int = 1) -> dict[str, Timing]:
    """Round-robin timing: ``block`` timed calls of each candidate per round (after one
    untimed call when ``block > 1``), so slow drifts in machine load hit all candidates
    alike (use for ratios within one process). Blocks keep one runtime's thread pool,
    still spinning after its call returns, from stealing the cores of the next one."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    rounds = -(-runs // block)
    for _ in range(rounds):
        for name, call in calls.items():
            if block > 1:
                call()
            for _ in range(block):
                t0 = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, values in samples.items():
        values = sorted(values[:runs])
        p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
        out[name] = Timing(statistics.median(values), p90, len(values))
    return out


def measure(bind: Callable[[int], Callable[[], object]], *, batch: int, throughput_batch: int,
            runs: int, warmup: int, device: torch.device) -> dict:
    """Latency at ``batch`` and throughput at ``throughput_batch`` (0: skipped)."""
    latency = time_callable(bind(batch), runs=runs, warmup=warmup, device=device)
    result = {"latency": latency.as_dict(), "throughput": None}
    if throughput_batch > 0:
        t_runs = max(3, runs // 5)
        timing = time_callable(bind(throughput_batch), runs=t_runs, warmup=max(1, warmup // 5),
                               device=device)
        result["throughput"] = {"batch": throughput_batch, "median_ms": timing.median_ms,
                                "images_per_s": throughput_batch * 1e3 / timing.median_ms,
                                "runs": t_runs}
    return result


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", default=["all"], metavar="MODEL",
                        help="FastViT variants, peers (torchvision names; timm:NAME) or groups "
                        "fastvit / peers / all (default: all)")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=["eager"],
                        metavar="RUNTIME", help=f"any of {', '.join(RUNTIMES)} (default: eager)")
    parser.add_argument("--unfused", action="store_true",
                        help="benchmark train-time (unfused) forms instead of fused ones")
    parser.add_argument("--features-only", action="store_true",
                        help="backbones without head (detection/segmentation latency)")
    parser.add_argument("--image-size", type=int, default=256, help="FastViT input side")
    parser.add_argument("--peer-image-size", type=int, metavar="N",
                        help="peer input side (default: each peer's published eval size)")
    parser.add_argument("--batch-size", type=int, default=1, help="latency batch")
    parser.add_argument("--throughput-batch", type=int, default=16,
                        help="throughput batch (0: skip throughput)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs (median, p90)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    parser.add_argument("--repeats", type=int, default=1,
                        help="passes over the whole list; each result is the median over "
                        "passes (robust to bursts of load on shared machines)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="intra-op threads for PyTorch and ONNX Runtime (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--half", action="store_true", help="fp16 (CUDA, PyTorch runtimes)")
    parser.add_argument("--out", default="outputs/bench", metavar="DIR",
                        help="folder for bench.json, bench.md, pareto.png")


def reproduce_command(args: argparse.Namespace) -> str:
    """The full command line that reruns this benchmark (every option spelled out)."""
    parts = ["fastvit", "bench", *args.models, "--runtimes", *args.runtimes,
             "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
             "--throughput-batch", str(args.throughput_batch), "--runs", str(args.runs),
             "--warmup", str(args.warmup), "--repeats", str(args.repeats),
             "--threads", str(args.threads),
             "--device", args.device, "--out", str(args.out)]
    if args.peer_image_size:
        parts += ["--peer-image-size", str(args.peer_image_size)]
    for flag in ("unfused", "features_only", "half"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    return shlex.join(parts)


def _validate(args: argparse.Namespace) -> None:
    for option in ("runs", "batch_size", "image_size", "repeats"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.throughput_batch < 0:
        raise ConfigError("--warmup and --throughput-batch must be >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if args.half and args.device != "cuda":
        raise ConfigError("--half needs --device cuda (fp16 convolutions are slow on CPU)")


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args: argparse.Namespace) -> dict:
    import onnxruntime

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
           "processor": cpu_name(), "cpu_count": os.cpu_count(),
           "threads": args.threads, "device": args.device}
    if args.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def combine_passes(results: list[dict]) -> dict:
    """Median over passes of the per-pass medians (and p90s): a burst of load from
    another process spoils one pass of a job, not the job."""
    lat = [r["latency"] for r in results]
    merged = {"latency": {"median_ms": statistics.median(x["median_ms"] for x in lat),
                          "p90_ms": statistics.median(x["p90_ms"] for x in lat),
                          "runs": sum(x["runs"] for x in lat),
                          "pass_medians_ms": [x["median_ms"] for x in lat]},
              "throughput": None}
    if results[0]["throughput"] is not None:
        thr = [r["throughput"] for r in results]
        median_ms = statistics.median(x["median_ms"] for x in thr)
        merged["throughput"] = {"batch": thr[0]["batch"], "median_ms": median_ms,
                                "images_per_s": thr[0]["batch"] * 1e3 / median_ms,
                                "runs": sum(x["runs"] for x in thr)}
    return merged


def run_benchmark(args: argparse.Namespace,
                  on_row: Callable[[dict], None] | None = None) -> dict:
    """Benchmark every (model, runtime) pair; failures and skips become rows with a note.

    With ``args.repeats > 1`` the whole list is measured again in further passes
    and each pair reports the median over passes (see :func:`combine_passes`).
    ``on_row(report_so_far)`` is called after each measurement (e.g. to save
    partial results of a long run)."""
    device = torch.device(args.device)
    models = expand_models(args.models)
    jobs = [(m, r) for m in models for r in args.runtimes]
    rows, subjects, binds, passes = [], {}, {}, {}
    report = {"command": reproduce_command(args), "environment": environment(args),
              "config": {k: v for k, v in vars(args).items() if not callable(v)},
              "results": rows}
    timing = dict(batch=args.batch_size, throughput_batch=args.throughput_batch,
                  runs=args.runs, warmup=args.warmup, device=device)
    with tempfile.TemporaryDirectory(prefix="fastvit-bench-") as scratch:
        for i, (name, runtime) in enumerate(tqdm(jobs, desc="bench", unit="run")):
            row = {"model": name, "runtime": runtime, "batch": args.batch_size}
            try:
                if name not in subjects:
                    subjects[name] = build_subject(
                        name, fused=not args.unfused, features_only=args.features_only,
                        image_size=args.image_size, peer_image_size=args.peer_image_size)
                subject = subjects[name]
                row.update(family=subject.family, form=subject.form,
                           image_size=subject.image_size,
                           params_m=sum(p.numel() for p in subject.model.parameters()) / 1e6,
                           published_top1=subject.published.top1 if subject.published else None)
                workdir = Path(scratch) / str(i)
                workdir.mkdir()
                binds[i] = make_runtime(subject, runtime, device=device, half=args.half,
                                        threads=args.threads, workdir=workdir)
                passes[i] = [measure(binds[i], **timing)]
                row.update(passes[i][0], status="ok")
            except PeerUnavailable as why:
                row.update(status="skipped", note=str(why))
            except Exception as err:  # one broken runtime must not lose the others' results
                row.update(status="failed", note=f"{type(err).__name__}: {err}".splitlines()[0])
            rows.append(row)
            if on_row is not None:
                on_row(report)
        for repeat in range(1, args.repeats):
            for i in tqdm(list(binds), desc=f"bench pass {repeat + 1}/{args.repeats}", unit="run"):
                passes[i].append(measure(binds[i], **timing))
                rows[i].update(combine_passes(passes[i]))
                if on_row is not None:
                    on_row(report)
    return report


def main(args: argparse.Namespace) -> int:
    from fastvit.bench_report import markdown_table, write_reports

    _validate(args)
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    partial = out / "bench.json"
    report = run_benchmark(args, on_row=lambda so_far: atomic_write_text(
        partial, json.dumps(so_far, indent=2) + "\n"))  # a killed run keeps its results
    paths = write_reports(report, out)
    print(markdown_table(report["results"]))
    print(f"\nreproduce: {report['command']}")
    print("wrote " + ", ".join(str(p) for p in paths))
    failed = [r for r in report["results"] if r["status"] == "failed"]
    for row in failed:
        print(f"failed: {row['model']} / {row['runtime']}: {row['note']}")
    return 1 if failed else 0
