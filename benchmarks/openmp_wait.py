"""PyTorch's OpenMP wait policy: speed alone against behaviour on a shared machine.

PyTorch's CPU kernels run on libgomp's thread pool. After each parallel region its
threads wait for the next one: libgomp's default spins about 3 ms first (fast when the
next op follows at once, but that time is burnt on cores other processes need);
``OMP_WAIT_POLICY=PASSIVE`` sleeps at once (frees the cores, but every op pays a
futex wake-up); ``GOMP_SPINCOUNT=N`` spins N iterations (~N/100 microseconds) first
(``passive+spin:1000`` is fastvit's default, ``fastvit.openmp_wait``).
For each policy this measures, with ``--threads`` threads per process and interleaved
repeats (medians):

* training alone (fastvit_t8 64x64 batch 32, images/s) and batch-1 inference alone
  (fastvit_t8 fused 64x64, inferences/s; eager, or the runtime ``--neighbour`` names):
  what a dedicated machine gets;
* training beside that inference loop, and training beside a second training (every
  process under the policy): what a shared machine keeps.

    python benchmarks/openmp_wait.py
    python benchmarks/openmp_wait.py --policies passive passive+spin:1000 --repeats 5
    python benchmarks/openmp_wait.py --neighbour onnx --policies passive passive+spin:1000

The processes are those of ``benchmarks/neighbours.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import neighbours  # noqa: E402  (a sibling script, not a package)

from fastvit.openmp_wait import OPENMP_WAIT  # noqa: E402


def policy_environment(policy: str) -> tuple[dict[str, str], bool]:
    """The children's environment under ``policy`` (the shell's own OpenMP wait settings
    dropped) and their FASTVIT_SPIN (on where fastvit must leave libgomp's settings alone)."""
    env = {k: v for k, v in neighbours.BASE_ENV.items() if k not in OPENMP_WAIT}
    name, _, count = policy.partition(":")
    if policy in ("default", "passive") or name in ("spin", "passive+spin"):
        if name.startswith("passive"):
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        if count:
            env["GOMP_SPINCOUNT"] = count
        return env, not name.startswith("passive")
    raise SystemExit(f"unknown policy {policy!r}: default, passive, spin:N or passive+spin:N")


def train_beside_train(threads: int, args: argparse.Namespace, spin: bool,
                       env: dict[str, str]) -> float:
    """Mean images/s of two identical trainings started together (median step each, so
    the few steps one runs after the other has finished barely count)."""
    with tempfile.TemporaryDirectory() as signals:
        first = neighbours.child("train", args, Path(signals), spin, threads, env)
        second = neighbours.child("train", args, Path(signals), spin, threads, env)
        one = neighbours.result(first)["images_per_s"]
        two = neighbours.result(second)["images_per_s"]
    return statistics.mean([one, two])


def measure(policy: str, args: argparse.Namespace) -> dict:
    env, spin = policy_environment(policy)
    pair = neighbours.measure(args.neighbour, spin, args.threads, args, env)
    return {**pair, "train_beside_train": train_beside_train(args.threads, args, spin, env)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+",
                        default=["default", "passive", "passive+spin:300",
                                 "passive+spin:1000", "spin:10000"])
    parser.add_argument("--neighbour", default="eager",
                        help="the inference loop beside training: eager, onnx, openvino, ...")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=15, help="timed training steps")
    parser.add_argument("--infer-seconds", type=float, default=6.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="outputs/openmp_wait")
    args = parser.parse_args(argv)
    from fastvit.bench.machine import cpu_name, isa_summary

    command = shlex.join(["python", "benchmarks/openmp_wait.py", *(argv or sys.argv[1:])])
    runs: dict[str, list[dict]] = {p: [] for p in args.policies}
    for repeat in range(args.repeats):
        for policy in args.policies:
            runs[policy].append(measure(policy, args))
            print(json.dumps({"repeat": repeat, "policy": policy, **runs[policy][-1]}),
                  flush=True)
    rows = [{"policy": p, **neighbours.medians(runs[p])} for p in args.policies]
    lines = [f"Command: `{command}`", "",
             f"{cpu_name()} ({os.cpu_count()} CPUs; {isa_summary()}), {args.threads} threads "
             f"per process, medians of {args.repeats} interleaved repeats, "
             f"{time.strftime('%Y-%m-%d')}.", "",
             f"| policy | training alone img/s | {args.neighbour} inference alone /s | "
             "training beside "
             "inference (kept) | inference beside training (kept) | training beside "
             "training (kept) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['train_alone']:.1f} | {r['infer_alone']:.1f} "
            f"| {r['train_beside']:.1f} ({r['train_beside'] / r['train_alone']:.0%}) "
            f"| {r['infer_beside']:.1f} ({r['infer_beside'] / r['infer_alone']:.0%}) "
            f"| {r['train_beside_train']:.1f} "
            f"({r['train_beside_train'] / r['train_alone']:.0%}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "openmp_wait.md").write_text(text)
    (out / "openmp_wait.json").write_text(json.dumps({"command": command, "rows": rows},
                                                     indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
