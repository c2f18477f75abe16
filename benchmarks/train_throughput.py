"""Training-step throughput and peak memory: our fastvit_t8 beside timm's, same loop.

    python benchmarks/train_throughput.py [--batch 32] [--size 256] [--windows 5]
        [--steps-per-window 2] [--threads 2] [--channels-last] [--json out.json]

The loop is the trainer's inner step without data loading: a fixed synthetic
batch, forward, soft-target cross entropy, backward, AdamW step (weight decay
0.05), zero_grad. Throughput is timed in one process with the models
interleaved window by window (machine noise hits both alike) after warm-up;
the median images/s over the windows is reported. Peak resident memory is
measured per model in a fresh child process running the same loop
(``ru_maxrss``: a process's peak cannot be reset, so sharing one process would
hide the second model's peak under the first's). timm is a reference only.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MODELS = ("ours", "timm")


def build(which: str, num_classes: int = 1000) -> torch.nn.Module:
    if which == "ours":
        import fastvit

        return fastvit.create_model("fastvit_t8", num_classes=num_classes)
    import timm

    return timm.create_model("fastvit_t8", pretrained=False, num_classes=num_classes)


class StepLoop:
    """One model, its AdamW and the fixed batch."""

    def __init__(self, which: str, batch: int, size: int, channels_last: bool) -> None:
        torch.manual_seed(0)
        self.model = build(which).train()
        self.x = torch.randn(batch, 3, size, size)
        self.y = torch.softmax(torch.randn(batch, 1000), dim=1)  # mixed/smoothed targets
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)

    def step(self) -> None:
        loss = F.cross_entropy(self.model(self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def timed(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return self.x.shape[0] * steps / (time.perf_counter() - t0)


def throughput(args: argparse.Namespace) -> dict[str, dict]:
    loops = {m: StepLoop(m, args.batch, args.size, args.channels_last) for m in MODELS}
    for loop in loops.values():
        for _ in range(args.warmup):
            loop.step()
    rates: dict[str, list[float]] = {m: [] for m in MODELS}
    for _ in range(args.windows):
        for name, loop in loops.items():
            rates[name].append(loop.timed(args.steps_per_window))
    return {m: {"img_per_s_median": statistics.median(r), "img_per_s_windows": r}
            for m, r in rates.items()}


def peak_rss_mib(which: str, args: argparse.Namespace) -> float:
    """Peak RSS of a fresh process that builds ``which`` and runs warm-up + 2 steps."""
    cmd = [sys.executable, __file__, "--child", which, "--batch", str(args.batch),
           "--size", str(args.size), "--threads", str(args.threads)]
    if args.channels_last:
        cmd.append("--channels-last")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def child(which: str, args: argparse.Namespace) -> None:
    loop = StepLoop(which, args.batch, args.size, args.channels_last)
    for _ in range(3):
        loop.step()
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--steps-per-window", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child runs")
    p.add_argument("--json", default="benchmarks/results/train_throughput.json")
    p.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args)
        return
    results = throughput(args)
    for m in MODELS:
        results[m]["peak_rss_mib"] = None if args.no_memory else peak_rss_mib(m, args)
    report = {
        "setup": {"model": "fastvit_t8", "batch": args.batch, "size": args.size,
                  "threads": args.threads, "channels_last": args.channels_last,
                  "warmup_steps": args.warmup, "windows": args.windows,
                  "steps_per_window": args.steps_per_window, "torch": torch.__version__,
                  "machine": platform.machine(), "processor": platform.processor()},
        "results": results,
    }
    print(f"fastvit_t8 training step, batch {args.batch}, {args.size}x{args.size}, CPU, "
          f"{args.threads} threads{', channels_last' if args.channels_last else ''}\n")
    print("| model | images/s (median) | windows | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for m in MODELS:
        r = results[m]
        rss = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "-"
        windows = ", ".join(f"{v:.1f}" for v in r["img_per_s_windows"])
        print(f"| {m} | {r['img_per_s_median']:.2f} | {windows} | {rss} |")
    ratio = results["ours"]["img_per_s_median"] / results["timm"]["img_per_s_median"]
    print(f"\nours / timm throughput: {ratio:.2f}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
