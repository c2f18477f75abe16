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

Two busy processes side by side can at best split the cores, so each also runs alone on
half the threads (its fair-share ceiling: the most it can keep beside the other) and side
by side with the other on half the threads (the pair fitted to the cores), both against
its alone figure on ``--threads``. Every case runs ``--repeats`` times, interleaved;
medians are reported (table, JSON and a PNG plot under ``--out``).

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
#: the environment before ``import fastvit`` adds its OpenMP wait settings: children start
#: from it, so ``--spin`` children get every library's own defaults
BASE_ENV = dict(os.environ)


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


def child(role: str, args: argparse.Namespace, signals: Path, spin: bool, threads: int,
          env: dict[str, str] | None = None, **extra: str) -> subprocess.Popen:
    env = dict(BASE_ENV if env is None else env, FASTVIT_SPIN="1" if spin else "0")
    cmd = [sys.executable, str(HERE), "--role", role, "--threads", str(threads),
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


def measure(runtime: str, spin: bool, threads: int, args: argparse.Namespace,
            env: dict[str, str] | None = None) -> dict:
    """Inference alone, training alone, both together; every process ``threads`` threads
    (in ``env``, default :data:`BASE_ENV`)."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        alone_signals, both_signals = Path(a), Path(b)
        infer = child("infer", args, alone_signals, spin, threads, env, runtime=runtime)
        wait_ready(alone_signals, infer)
        (alone_signals / "go").touch()
        time.sleep(args.infer_seconds)
        (alone_signals / "stop").touch()
        infer_alone = result(infer)
        train_alone = result(child("train", args, alone_signals, spin, threads, env))
        infer = child("infer", args, both_signals, spin, threads, env, runtime=runtime)
        wait_ready(both_signals, infer)
        (both_signals / "go").touch()
        train_beside = result(child("train", args, both_signals, spin, threads, env))
        (both_signals / "stop").touch()
        infer_beside = result(infer)
    return {"infer_alone": infer_alone["per_s"], "infer_beside": infer_beside["per_s"],
            "train_alone": train_alone["images_per_s"],
            "train_beside": train_beside["images_per_s"]}


def medians(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def measure_all(args: argparse.Namespace) -> list[dict]:
    """Every (runtime, spin, threads) case ``--repeats`` times, the cases interleaved within
    each repeat so that drifting machine load hits them alike; medians per case."""
    half = max(1, args.threads // 2)
    cases = []
    for runtime in args.runtimes:
        cases.append((runtime, False, args.threads))
        if runtime.startswith(("onnx", "openvino")):
            cases.append((runtime, True, args.threads))
        if half < args.threads and not args.no_fitted:
            cases.append((runtime, False, half))
    runs: dict[tuple, list[dict]] = {case: [] for case in cases}
    for repeat in range(args.repeats):
        for case in cases:
            runtime, spin, threads = case
            try:
                runs[case].append(measure(runtime, spin, threads, args))
            except RuntimeError as err:
                print(f"skipped {runtime} (spin={spin}, threads={threads}): {err}",
                      file=sys.stderr)
                continue
            print(json.dumps({"repeat": repeat, "runtime": runtime, "spin": spin,
                              "threads": threads, **runs[case][-1]}), flush=True)
    return [{"runtime": case[0], "spin": case[1], "threads": case[2],
             "repeats": len(runs[case]), **medians(runs[case])}
            for case in cases if runs[case]]


def default_table(rows: list[dict], threads: int) -> list[str]:
    lines = ["| neighbour | threads spin | inference alone /s | beside training /s | kept | "
             "training alone img/s | beside inference img/s | kept |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["threads"] != threads:
            continue
        lines.append(
            f"| {r['runtime']} | {'yes (--spin)' if r['spin'] else 'no (default)'} "
            f"| {r['infer_alone']:.1f} | {r['infer_beside']:.1f} "
            f"| {r['infer_beside'] / r['infer_alone']:.0%} | {r['train_alone']:.1f} "
            f"| {r['train_beside']:.1f} | {r['train_beside'] / r['train_alone']:.0%} |")
    return lines


def fitted(rows: list[dict], threads: int) -> list[dict]:
    """Per runtime: the fair-share ceiling and the fitted pair, both against ``threads`` alone.

    Side by side, two busy processes split the cores; the most either can keep is what it
    does alone on its share (half the threads): ``ceiling``. ``fitted`` is what each keeps
    beside the other when both are given that share (``--threads`` halved)."""
    full = {r["runtime"]: r for r in rows if r["threads"] == threads and not r["spin"]}
    out = []
    for r in rows:
        base = full.get(r["runtime"])
        if r["threads"] == threads or base is None:
            continue
        out.append({"runtime": r["runtime"], "half_threads": r["threads"],
                    "infer_ceiling": r["infer_alone"] / base["infer_alone"],
                    "infer_fitted": r["infer_beside"] / base["infer_alone"],
                    "train_ceiling": r["train_alone"] / base["train_alone"],
                    "train_fitted": r["train_beside"] / base["train_alone"]})
    return out


def fitted_table(shares: list[dict], threads: int) -> list[str]:
    lines = [f"| neighbour | inference: {threads // 2 or 1} thread(s) alone = ceiling | "
             "fitted pair | training: ceiling | fitted pair |", "|---|---|---|---|---|"]
    for s in shares:
        lines.append(f"| {s['runtime']} | {s['infer_ceiling']:.0%} | {s['infer_fitted']:.0%} "
                     f"| {s['train_ceiling']:.0%} | {s['train_fitted']:.0%} |")
    return lines


def plot(rows: list[dict], shares: list[dict], threads: int, path: Path) -> None:
    """Kept throughput per runtime: defaults, --spin, fitted pair; the 85% line and ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = {s["runtime"]: s for s in shares}
    bars = [(f"{r['runtime']}{' --spin' if r['spin'] else ''}", r) for r in rows
            if r["threads"] == threads]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, side, title in ((axes[0], "infer", "inference loop"),
                            (axes[1], "train", "training")):
        for x, (_, r) in enumerate(bars):
            ax.bar(x - 0.2, r[f"{side}_beside"] / r[f"{side}_alone"], 0.4, color="C0",
                   label=f"{threads} threads each" if x == 0 else None)
            s = share.get(r["runtime"]) if not r["spin"] else None
            if s:
                ax.bar(x + 0.2, s[f"{side}_fitted"], 0.4, color="C2",
                       label="fitted: half the threads each" if x == 0 else None)
                ax.plot([x - 0.45, x + 0.45], [s[f"{side}_ceiling"]] * 2, color="k",
                        lw=1.5, label="fair-share ceiling" if x == 0 else None)
        ax.axhline(0.85, color="C3", ls="--", lw=1, label="85%")
        ax.set_xticks(range(len(bars)), [name for name, _ in bars], rotation=20)
        ax.set_title(f"{title}: kept beside the other (vs alone, {threads} threads)")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    parser.add_argument("--repeats", type=int, default=3,
                        help="measure every case this often (interleaved); medians reported")
    parser.add_argument("--no-fitted", action="store_true",
                        help="skip the half-thread cases (ceiling and fitted pair)")
    parser.add_argument("--role", choices=["main", "train", "infer"], default="main")
    parser.add_argument("--runtime")
    parser.add_argument("--signals")
    parser.add_argument("--out", default="outputs/neighbours")
    args = parser.parse_args(argv)
    if args.role != "main":
        # before torch, as in the fastvit command: its OpenMP wait setting must come first
        import fastvit  # noqa: F401
    if args.role == "train":
        print(json.dumps(train_role(args)))
        return 0
    if args.role == "infer":
        print(json.dumps(infer_role(args)))
        return 0
    from fastvit.bench.machine import cpu_name, isa_summary

    command = shlex.join(["python", "benchmarks/neighbours.py", *(argv or sys.argv[1:])])
    rows = measure_all(args)
    shares = fitted(rows, args.threads)
    lines = [f"Command: `{command}`", "",
             f"{cpu_name()} ({os.cpu_count()} CPUs; {isa_summary()}), {args.threads} threads "
             f"per process; training: fastvit_t8 64x64 batch 32, {args.steps} timed steps; "
             f"inference: fastvit_t8 fused 64x64 batch 1; medians of {args.repeats} "
             "interleaved repeats.", "", *default_table(rows, args.threads)]
    if shares:
        lines += ["", "Against the same alone figures: each side alone on half the threads "
                  "(the fair-share ceiling) and the fitted pair side by side.", "",
                  *fitted_table(shares, args.threads)]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "neighbours.md").write_text(text)
    (out / "neighbours.json").write_text(json.dumps(
        {"command": command, "rows": rows, "fitted": shares}, indent=2) + "\n")
    if rows:
        plot(rows, shares, args.threads, out / "neighbours.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
