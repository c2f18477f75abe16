"""Does a compiled fastvit_t8 training step survive on this CPU? Each combination runs in a
child process (a heap corruption kills only the child), with plain ``torch.compile`` and
with ``fastvit.run.compiling.compile_model`` (Inductor's layout optimization off on CPU).

    python benchmarks/compile_guard.py [--size 128] [--batch 16] [--steps 3] [--threads 2]

Reruns the measurement behind docs/training.md ("Compiled training"); use it to check
whether a new torch release still needs the guard.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import sys, torch, torch.nn.functional as F
import fastvit
from fastvit.run.compiling import compile_model
from fastvit.train.memory_format import to_channels_last
size, batch, steps, threads, how, layout, amp = sys.argv[1:8]
torch.set_num_threads(int(threads))
torch.manual_seed(0)
model = fastvit.create_model("fastvit_t8").train()
x = torch.randn(int(batch), 3, int(size), int(size))
y = torch.randint(0, 1000, (int(batch),))
if layout == "channels_last":
    model = to_channels_last(model, "cpu")
    x = x.contiguous(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
run = compile_model(model, "cpu") if how == "guarded" else torch.compile(model)
for step in range(int(steps)):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
        loss = F.cross_entropy(run(x).float(), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    print(f"step {step + 1} loss {loss.item():.4f}", flush=True)
"""

CASES = [("plain", "contiguous", "none"), ("guarded", "contiguous", "none"),
         ("guarded", "channels_last", "none"), ("guarded", "channels_last", "bf16"),
         ("guarded", "contiguous", "bf16")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    print(f"fastvit_t8 training step, AdamW, batch {args.batch}, {args.size}x{args.size}, "
          f"CPU, {args.threads} threads, {args.steps} steps\n")
    print("| compile | layout | autocast | result | steps done | seconds |")
    print("|---|---|---|---|---|---|")
    for how, layout, amp in CASES:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, str(args.size), str(args.batch),
                               str(args.steps), str(args.threads), how, layout, amp],
                              capture_output=True, text=True, env=env)
        steps = done.stdout.count("step ")
        tail = (done.stderr.strip().splitlines() or [""])[-1][:60]
        result = "ok" if done.returncode == 0 else f"exit {done.returncode}: {tail}"
        what = "torch.compile" if how == "plain" else "compile_model"
        print(f"| {what} | {layout} | {amp} | {result} | {steps} "
              f"| {time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
