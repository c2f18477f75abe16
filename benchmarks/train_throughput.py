"""Training-step throughput and peak memory: our fastvit_t8 beside timm's, same loop.

    python benchmarks/train_throughput.py [--batch 32] [--size 256] [--windows 5]
        [--steps-per-window 2] [--threads 2] [--channels-last] [--compile] [--json out.json]
        [--device cuda --amp bf16]

The loop is the trainer's inner step without data loading: a fixed synthetic
batch, forward, soft-target cross entropy, backward, AdamW step (weight decay
0.05), zero_grad. Throughput is timed in one process with the models
interleaved window by window (machine noise hits both alike) after warm-up;
the median images/s over the windows is reported, per wall-clock second and
(CPU) per CPU-second of the process, which is steadier on a shared machine.
Peak resident memory is measured per model in a fresh child process running
the same loop (the high-water mark ``VmHWM`` of Linux, else ``ru_maxrss``; a
process's peak cannot be reset, so one process would hide the second model's
peak under the first's). timm is a reference only.

``--compile`` adds a third row, ours through ``torch.compile`` exactly as
``fastvit train --compile`` runs it (:func:`fastvit.run.compiling.compile_model`);
its warm-up steps include the compilation, its peak memory includes Inductor's.
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
COMPILED = "ours --compile"


def build(which: str, num_classes: int = 1000) -> torch.nn.Module:
    if which in ("ours", COMPILED):
        import fastvit

        return fastvit.create_model("fastvit_t8", num_classes=num_classes)
    import timm

    return timm.create_model("fastvit_t8", pretrained=False, num_classes=num_classes)


AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class StepLoop:
    """One model, its AdamW and the fixed batch."""

    def __init__(self, which: str, args: argparse.Namespace) -> None:
        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.amp = AMP[args.amp]
        self.model = build(which).train().to(self.device)
        self.x = torch.randn(args.batch, 3, args.size, args.size, device=self.device)
        self.y = torch.softmax(torch.randn(args.batch, 1000, device=self.device), dim=1)
        if args.channels_last:  # same conversion as the trainer (guards a CPU kernel crash)
            from fastvit.train.memory_format import to_channels_last

            self.model = to_channels_last(self.model, self.device)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.forward = self.model
        if which == COMPILED:
            from fastvit.run.compiling import compile_model

            self.forward = compile_model(self.model, self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def step(self) -> None:
        with torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16,
                            enabled=self.amp is not None):
            loss = F.cross_entropy(self.forward(self.x).float(), self.y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, steps: int) -> tuple[float, float]:
        """(images per wall second, images per CPU second of this process)."""
        self.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        self.sync()
        images = self.x.shape[0] * steps
        return (images / (time.perf_counter() - t0),
                images / max(time.process_time() - c0, 1e-9))


def candidates(args: argparse.Namespace) -> tuple[str, ...]:
    return (*MODELS, COMPILED) if args.compile else MODELS


def throughput(args: argparse.Namespace) -> dict[str, dict]:
    names = candidates(args)
    loops = {m: StepLoop(m, args) for m in names}
    for loop in loops.values():
        for _ in range(args.warmup):
            loop.step()
    wall: dict[str, list[float]] = {m: [] for m in names}
    cpu: dict[str, list[float]] = {m: [] for m in names}
    for _ in range(args.windows):
        for name, loop in loops.items():
            w, c = loop.timed(args.steps_per_window)
            wall[name].append(w)
            cpu[name].append(c)
    return {m: {"img_per_s_median": statistics.median(wall[m]), "img_per_s_windows": wall[m],
                "img_per_cpu_s_median": statistics.median(cpu[m])} for m in names}


def peak_rss_mib(which: str, args: argparse.Namespace) -> float:
    """Peak RSS of a fresh process that builds ``which`` and runs warm-up + 2 steps."""
    cmd = [sys.executable, __file__, "--child", which, "--batch", str(args.batch),
           "--size", str(args.size), "--threads", str(args.threads), "--device", args.device,
           "--amp", args.amp]
    if args.channels_last:
        cmd.append("--channels-last")
    if which == COMPILED:
        cmd.append("--compile")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _peak_rss_mib() -> float:
    status = Path("/proc/self/status")
    if status.is_file():  # VmHWM belongs to this program's memory map: reset by exec
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def child(which: str, args: argparse.Namespace) -> None:
    loop = StepLoop(which, args)
    for _ in range(3):
        loop.step()
    loop.sync()
    print(_peak_rss_mib())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--steps-per-window", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="add ours through torch.compile (as fastvit train --compile)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (RSS then excludes GPU memory)")
    p.add_argument("--amp", choices=sorted(AMP), default="none")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child runs")
    p.add_argument("--json", default="benchmarks/results/train_throughput.json")
    p.add_argument("--child", choices=(*MODELS, COMPILED), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args)
        return
    # memory first, while this process is still small
    names = candidates(args)
    peaks = {m: None if args.no_memory else peak_rss_mib(m, args) for m in names}
    results = throughput(args)
    for m in names:
        results[m]["peak_rss_mib"] = peaks[m]
    report = {
        "setup": {"model": "fastvit_t8", "batch": args.batch, "size": args.size,
                  "threads": args.threads, "channels_last": args.channels_last,
                  "compile": args.compile,
                  "device": args.device, "amp": args.amp,
                  "warmup_steps": args.warmup, "windows": args.windows,
                  "steps_per_window": args.steps_per_window, "torch": torch.__version__,
                  "machine": platform.machine(), "processor": platform.processor()},
        "results": results,
    }
    print(f"fastvit_t8 training step, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.device}, {args.threads} threads, amp {args.amp}"
          f"{', channels_last' if args.channels_last else ''}\n")
    print("| model | images/s (median) | windows | images per CPU-s | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    for m in names:
        r = results[m]
        rss = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "-"
        windows = ", ".join(f"{v:.1f}" for v in r["img_per_s_windows"])
        print(f"| {m} | {r['img_per_s_median']:.2f} | {windows} | "
              f"{r['img_per_cpu_s_median']:.2f} | {rss} |")
    ratio = results["ours"]["img_per_s_median"] / results["timm"]["img_per_s_median"]
    print(f"\nours / timm throughput: {ratio:.2f}")
    if args.compile:
        ours_c, timm = results[COMPILED], results["timm"]
        print(f"ours --compile / timm eager throughput: "
              f"{ours_c['img_per_s_median'] / timm['img_per_s_median']:.2f} (target >= 1.3)")
        if ours_c["peak_rss_mib"] is not None:
            print(f"ours --compile / timm eager peak RSS: "
                  f"{ours_c['peak_rss_mib'] / timm['peak_rss_mib']:.2f} (target <= 1.0)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
