"""``run_benchmark``: latency and throughput of FastViT and its peers, per runtime.

Latency is the median (and p90) over ``runs`` timed calls after ``warmup``
untimed ones, at ``batch_size`` (1 by default); throughput is images/s at
``throughput_batch``. On CUDA each call is timed with CUDA events. The report
(see :mod:`fastvit.bench.report`) carries the exact command that reproduces it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from fastvit.bench.machine import cpu_isa, cpu_name, isa_summary
from fastvit.bench.peers import PeerUnavailable
from fastvit.bench.runtimes import PRECISION, RUNTIMES, build_subject, expand_models, make_runtime
from fastvit.bench.timing import Timing, time_callable
from fastvit.deploy.spinning import policy
from fastvit.errors import ConfigError
from fastvit.models import VARIANTS


@dataclass
class BenchConfig:
    """What to measure and how (the fields are ``fastvit bench``'s options)."""

    models: list[str] = field(default_factory=lambda: ["all"])
    runtimes: list[str] = field(default_factory=lambda: ["eager"])
    unfused: bool = False
    features_only: bool = False
    image_size: int = 256
    peer_image_size: int | None = None
    batch_size: int = 1
    throughput_batch: int = 16
    runs: int = 50
    warmup: int = 10
    repeats: int = 1
    threads: int | None = None
    device: str = "cpu"
    half: bool = False
    pretrained: str | None = None  # weights of the FastViT variants (a tag, or one file)
    spin: bool | None = None  # ORT / OpenVINO threads spin (None: FASTVIT_SPIN, else no)
    out: str = "outputs/bench"

    def validate(self) -> None:
        for option in ("runs", "batch_size", "image_size", "repeats"):
            if getattr(self, option) < 1:
                raise ConfigError(f"--{option.replace('_', '-')} must be >= 1")
        if self.warmup < 0 or self.throughput_batch < 0:
            raise ConfigError("--warmup and --throughput-batch must be >= 0")
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown:
            raise ConfigError(f"unknown runtime(s) {', '.join(unknown)}; choose from "
                              f"{', '.join(RUNTIMES)}")
        if self.half and torch.device(self.device).type != "cuda":
            raise ConfigError("--half needs a CUDA device (fp16 convolutions are slow on CPU)")
        if self.pretrained is not None:
            from fastvit.weights.registry import is_tag

            ours = [m for m in expand_models(self.models) if m in VARIANTS]
            if not is_tag(self.pretrained) and len(ours) > 1:
                raise ConfigError(f"--pretrained {self.pretrained} is one model's weights; "
                                  f"benchmark one FastViT variant with it (or give a tag such "
                                  f"as in1k, which names weights for every variant)")


def reproduce_command(config: BenchConfig) -> str:
    """The full command line that reruns this benchmark (every option spelled out)."""
    parts = ["fastvit", "bench", *config.models, "--runtimes", *config.runtimes,
             "--image-size", str(config.image_size), "--batch-size", str(config.batch_size),
             "--throughput-batch", str(config.throughput_batch), "--runs", str(config.runs),
             "--warmup", str(config.warmup), "--repeats", str(config.repeats),
             "--threads", str(config.threads), "--device", config.device,
             "--out", str(config.out)]
    if config.peer_image_size:
        parts += ["--peer-image-size", str(config.peer_image_size)]
    if config.pretrained:
        parts += ["--pretrained", str(config.pretrained)]
    for flag in ("unfused", "features_only", "half", "spin"):
        if getattr(config, flag):
            parts.append("--" + flag.replace("_", "-"))
    return shlex.join(parts)


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
    return {name: Timing.from_samples(values[:runs]) for name, values in samples.items()}


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


def environment(config: BenchConfig) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ort_version = version("onnxruntime")
    except PackageNotFoundError:  # the export extra is optional; bench skips ONNX rows
        ort_version = None
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "onnxruntime": ort_version, "platform": platform.platform(),
           "processor": cpu_name(), "isa": cpu_isa(), "isa_summary": isa_summary(),
           "cpu_count": os.cpu_count(), "threads": config.threads, "device": config.device,
           "thread_policy": policy(config.spin)}
    for package in ("executorch", "openvino", "nncf"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:  # not installed: its runtimes are skipped
            env[package] = None
    if torch.device(config.device).type == "cuda":
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


def run_benchmark(config: BenchConfig,
                  on_row: Callable[[dict], None] | None = None) -> dict:
    """Benchmark every (model, runtime) pair; failures and skips become rows with a note.

    With ``config.repeats > 1`` the whole list is measured again in further passes
    and each pair reports the median over passes (see :func:`combine_passes`).
    ``on_row(report_so_far)`` is called after each measurement (e.g. to save
    partial results of a long run)."""
    device = torch.device(config.device)
    models = expand_models(config.models)
    jobs = [(m, r) for m in models for r in config.runtimes]
    rows, subjects, binds, passes = [], {}, {}, {}
    report = {"command": reproduce_command(config), "environment": environment(config),
              "config": dataclasses.asdict(config), "results": rows}
    timing = dict(batch=config.batch_size, throughput_batch=config.throughput_batch,
                  runs=config.runs, warmup=config.warmup, device=device)
    with tempfile.TemporaryDirectory(prefix="fastvit-bench-") as scratch:
        for i, (name, runtime) in enumerate(tqdm(jobs, desc="bench", unit="run")):
            row = {"model": name, "runtime": runtime, "precision": PRECISION[runtime],
                   "batch": config.batch_size}
            try:
                if name not in subjects:
                    subjects[name] = build_subject(
                        name, fused=not config.unfused, features_only=config.features_only,
                        image_size=config.image_size, peer_image_size=config.peer_image_size,
                        pretrained=config.pretrained)
                subject = subjects[name]
                row.update(family=subject.family, form=subject.form,
                           image_size=subject.image_size,
                           params_m=sum(p.numel() for p in subject.model.parameters()) / 1e6,
                           published_top1=subject.published.top1 if subject.published else None)
                workdir = Path(scratch) / str(i)
                workdir.mkdir()
                binds[i] = make_runtime(subject, runtime, device=device, half=config.half,
                                        threads=config.threads, workdir=workdir,
                                        spin=config.spin)
                passes[i] = [measure(binds[i], **timing)]
                row.update(passes[i][0], status="ok")
            except PeerUnavailable as why:
                row.update(status="skipped", note=str(why))
            except Exception as err:  # one broken runtime must not lose the others' results
                row.update(status="failed", note=f"{type(err).__name__}: {err}".splitlines()[0])
            rows.append(row)
            if on_row is not None:
                on_row(report)
        for repeat in range(1, config.repeats):
            desc = f"bench pass {repeat + 1}/{config.repeats}"
            for i in tqdm(list(binds), desc=desc, unit="run"):
                passes[i].append(measure(binds[i], **timing))
                rows[i].update(combine_passes(passes[i]))
                if on_row is not None:
                    on_row(report)
    return report
