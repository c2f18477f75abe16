"""Eager CPU latency of our FastViT, train-time vs fused, beside timm's fused models.

    python benchmarks/latency_core.py [--runs 50] [--threads 2] [--json out.json]

One process, batch 1, 256x256, fp32, eager, after warm-up. Models are timed
interleaved (round-robin) so machine noise hits them alike; medians reported.
timm is a reference only (installed with the test extra).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import fastvit


def build(names: list[str]) -> dict[str, torch.nn.Module]:
    import timm
    from timm.utils.model import reparameterize_model

    models = {}
    for name in names:
        ours = fastvit.create_model(name).eval()
        fastvit.randomize_model_stats(ours)
        models[f"{name} ours train-time"] = ours
        models[f"{name} ours fused"] = fastvit.reparameterize(ours)
        ref = timm.create_model(name, pretrained=False).eval()
        models[f"{name} timm fused"] = reparameterize_model(ref)
    return models


@torch.inference_mode()
def measure(models: dict[str, torch.nn.Module], size: int, runs: int, warmup: int) -> dict:
    x = torch.randn(1, 3, size, size)
    for m in models.values():
        for _ in range(warmup):
            m(x)
    samples: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(runs):
        for key, m in models.items():
            t0 = time.perf_counter()
            m(x)
            samples[key].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["fastvit_t8", "fastvit_sa12"])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    med = measure(build(args.models), args.size, args.runs, args.warmup)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"batch 1, {args.size}x{args.size}, median of {args.runs} runs\n")
    print("| model | form | median ms | vs our train-time | vs timm fused |")
    print("|---|---|---|---|---|")
    results = []
    for name in args.models:
        train = med[f"{name} ours train-time"]
        timm_fused = med[f"{name} timm fused"]
        for form in ("ours train-time", "ours fused", "timm fused"):
            ms = med[f"{name} {form}"]
            print(f"| {name} | {form} | {ms:.2f} | {ms / train:.2f} | {ms / timm_fused:.2f} |")
            results.append({"model": name, "form": form, "median_ms": ms})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "size": args.size, "runs": args.runs,
                       "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
