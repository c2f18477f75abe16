"""Training beside an inference loop: does each runtime stay a good neighbour?

Two processes: a short FastViT training loop (fastvit_t8, 64x64, batch 32, random data,
AdamW; throughput in images/s over its timed steps) and one runtime's batch-1 inference
loop (fastvit_t8 fused, 64x64, inferences/s). Each runtime is measured three ways,
interleaved per runtime so drifting machine load hits all alike: inference alone,
training alone, and both side by side (the inference loop runs exactly while training
does; both stop by themselves). ONNX Runtime and OpenVINO run with fastvit's default
thread policy (no spinning, unpinned) and with ``--spin`` (FASTVIT_SPIN=1, each
runtime's spinning / pinning defaults). Every process gets ``--threads`` threads (all
cores by default: what each runtime takes when not told).

    python benchmarks/neighbours.py                        # onnx, openvino, executorch, eager
    python benchmarks/neighbours.py --runtimes onnx-int8 --steps 40 --threads 2

``onnx-int8-export`` is a different neighbour: ONNX Runtime int8 quantization (the
calibration of ``fastvit export --int8``) run over and over, with and without spinning
calibration sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SIZE = 64


def train_role(args: argparse.Namespace) -> dict:
    import torch

    from fastvit import create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("fastvit_t8", num_classes=10).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, 3, SIZE, SIZE), torch.randint(0, 10, (32,))
    warmup, times = 3, []
    for step in range(args.steps + warmup):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return {"images_per_s": 32 / statistics.median(times), "steps": len(times)}


def infer_role(args: argparse.Namespace) -> dict:
    """Build the runtime, say ready, wait for go, loop until stop (or --max-seconds)."""
    import torch

    from fastvit.bench.runtimes import build_subject, make_runtime

    torch.set_num_threads(args.threads)
    folder = Path(args.signals)
    if args.runtime == "onnx-int8-export":
        return export_loop(args, folder)
    subject = build_subject("fastvit_t8", fused=True, features_only=False, image_size=SIZE,
                            peer_image_size=None)
    with tempfile.TemporaryDirectory() as scratch:
        call = make_runtime(subject, args.runtime, device=torch.device("cpu"), half=False,
                            threads=args.threads, workdir=Path(scratch))(1)
        for _ in range(10):
            call()
        (folder / "ready").touch()
        while not (folder / "go").exists():
            time.sleep(0.01)
        count, start = 0, time.perf_counter()
        while not (folder / "stop").exists() and time.perf_counter() - start < args.max_seconds:
            call()
            count += 1
        elapsed = time.perf_counter() - start
    return {"per_s": count / elapsed, "calls": count, "seconds": elapsed}


def export_loop(args: argparse.Namespace, folder: Path) -> dict:
    """ONNX Runtime int8 quantization of fastvit_t8 again and again (calibration sessions)."""
    from fastvit.bench.runtimes import calibration_samples
    from fastvit.deploy.onnx_export import export_onnx
    from fastvit.deploy.quantize import TensorCalibration, quantize_onnx
    from fastvit.pipeline import load_model

    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "t8.onnx"
        export_onnx(load_model("fastvit_t8").model, fp32, image_size=SIZE)
        samples = calibration_samples(SIZE) * 4
        (folder / "ready").touch()
        while not (folder / "go").exists():
            time.sleep(0.01)
        count, start = 0, time.perf_counter()
        while not (folder / "stop").exists() and time.perf_counter() - start < args.max_seconds:
            quantize_onnx(fp32, Path(scratch) / "t8.int8.onnx",
                          TensorCalibration(samples, "input", progress=False))
            count += 1
    return {"per_s": count / (time.perf_counter() - start), "calls": count}


def child(role: str, args: argparse.Namespace, signals: Path, spin: bool,
          **extra: str) -> subprocess.Popen:
    env = dict(os.environ, FASTVIT_SPIN="1" if spin else "0")
    cmd = [sys.executable, str(HERE), "--role", role, "--threads", str(args.threads),
           "--steps", str(args.steps), "--signals", str(signals),
           "--max-seconds", str(args.max_seconds)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"child failed ({process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def wait_ready(signals: Path, process: subprocess.Popen) -> None:
    while not (signals / "ready").exists():
        if process.poll() is not None:
            raise RuntimeError("inference child died while building")
        time.sleep(0.05)


def measure(runtime: str, spin: bool, args: argparse.Namespace) -> dict:
    """Inference alone, training alone, both together."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        alone_signals, both_signals = Path(a), Path(b)
        infer = child("infer", args, alone_signals, spin, runtime=runtime)
        wait_ready(alone_signals, infer)
        (alone_signals / "go").touch()
        time.sleep(args.infer_seconds)
        (alone_signals / "stop").touch()
        infer_alone = result(infer)
        train_alone = result(child("train", args, alone_signals, spin))
        infer = child("infer", args, both_signals, spin, runtime=runtime)
        wait_ready(both_signals, infer)
        (both_signals / "go").touch()
        train_beside = result(child("train", args, both_signals, spin))
        (both_signals / "stop").touch()
        infer_beside = result(infer)
    return {"runtime": runtime, "spin": spin, "infer_alone": infer_alone["per_s"],
            "infer_beside": infer_beside["per_s"], "train_alone": train_alone["images_per_s"],
            "train_beside": train_beside["images_per_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", nargs="+",
                        default=["onnx", "openvino", "executorch", "eager"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--infer-seconds", type=float, default=8.0,
                        help="length of the inference-alone window")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="an inference loop stops by itself after this long")
    parser.add_argument("--role", choices=["main", "train", "infer"], default="main")
    parser.add_argument("--runtime")
    parser.add_argument("--signals")
    parser.add_argument("--out", default="outputs/neighbours")
    args = parser.parse_args(argv)
    if args.role == "train":
        print(json.dumps(train_role(args)))
        return 0
    if args.role == "infer":
        print(json.dumps(infer_role(args)))
        return 0
    from fastvit.bench.machine import cpu_name, isa_summary

    command = shlex.join(["python", "benchmarks/neighbours.py", *(argv or sys.argv[1:])])
    rows = []
    for runtime in args.runtimes:
        spins = (False, True) if runtime.startswith(("onnx", "openvino")) else (False,)
        for spin in spins:
            try:
                rows.append(measure(runtime, spin, args))
            except RuntimeError as err:
                print(f"skipped {runtime} (spin={spin}): {err}", file=sys.stderr)
                continue
            print(json.dumps(rows[-1]), flush=True)
    lines = [f"Command: `{command}`", "",
             f"{cpu_name()} ({os.cpu_count()} CPUs; {isa_summary()}), {args.threads} threads "
             f"per process; training: fastvit_t8 64x64 batch 32, {args.steps} timed steps; "
             f"inference: fastvit_t8 fused 64x64 batch 1.", "",
             "| neighbour | threads spin | inference alone /s | beside training /s | kept | "
             "training alone img/s | beside inference img/s | kept |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['runtime']} | {'yes (--spin)' if r['spin'] else 'no (default)'} "
            f"| {r['infer_alone']:.1f} | {r['infer_beside']:.1f} "
            f"| {r['infer_beside'] / r['infer_alone']:.0%} | {r['train_alone']:.1f} "
            f"| {r['train_beside']:.1f} | {r['train_beside'] / r['train_alone']:.0%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "neighbours.md").write_text(text)
    (out / "neighbours.json").write_text(json.dumps({"command": command, "rows": rows},
                                                    indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
