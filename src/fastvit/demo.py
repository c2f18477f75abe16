"""``fastvit demo`` / ``make demo``: the project's main job, end to end on a laptop.

1. (when the training stack is present) train fastvit_t8 on scikit-learn's
   bundled digits, evaluate, reparameterize, re-evaluate;
2. for every variant: randomize BatchNorm statistics and layer scales, fuse,
   check equivalence, count params/GMACs and time train-time vs fused on CPU.

Writes ``variants.md``, ``variants.json`` and ``variants.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import fastvit
from fastvit.io import atomic_write, atomic_write_text
from fastvit.stats import count_gmacs, count_params
from fastvit.timing import time_model

TOLERANCE = 1e-5  # max |train - fused| / max |train output|


def variant_report(name: str, image_size: int = 256, runs: int = 10, warmup: int = 3,
                   seed: int = 0) -> dict:
    """Build, randomize, fuse, verify and time one variant."""
    torch.manual_seed(seed)
    model = fastvit.create_model(name).eval()
    fastvit.randomize_model_stats(model, seed=seed)
    fused = fastvit.reparameterize(model)
    x = torch.randn(1, 3, image_size, image_size)
    diff = fastvit.max_abs_difference(model, fused, x)
    rel = fastvit.max_abs_difference(model, fused, x, relative=True)
    t_train = time_model(model, x, runs=runs, warmup=warmup)
    t_fused = time_model(fused, x, runs=runs, warmup=warmup)
    return {
        "variant": name,
        "params_train_m": count_params(model) / 1e6,
        "params_fused_m": count_params(fused) / 1e6,
        "gmacs": count_gmacs(fused, image_size),
        "max_abs_diff": diff,
        "max_rel_diff": rel,
        "equivalent": rel < TOLERANCE,
        "latency_train_ms": t_train.median_ms,
        "latency_fused_ms": t_fused.median_ms,
        "fused_over_train": t_fused.median_ms / t_train.median_ms,
    }


def markdown_table(rows: list[dict], image_size: int, runs: int) -> str:
    lines = [
        f"Variant table (random weights, randomized BN stats and layer scales in [0.1, 0.5]; "
        f"CPU latency batch 1, {image_size}x{image_size}, fp32 eager, median of {runs} runs, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}).",
        "",
        "| variant | params train / fused (M) | GMACs | max abs diff | rel diff "
        "| train ms | fused ms | fused / train |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['params_train_m']:.2f} / {r['params_fused_m']:.2f} "
            f"| {r['gmacs']:.2f} | {r['max_abs_diff']:.2e} | {r['max_rel_diff']:.1e} "
            f"| {r['latency_train_ms']:.1f} | {r['latency_fused_ms']:.1f} "
            f"| {r['fused_over_train']:.2f} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"].removeprefix("fastvit_").upper() for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.bar([x - 0.2 for x in xs], [r["latency_train_ms"] for r in rows], 0.4,
           label="train-time")
    ax.bar([x + 0.2 for x in xs], [r["latency_fused_ms"] for r in rows], 0.4,
           label="reparameterized")
    for x, r in zip(xs, rows, strict=True):
        ax.text(x + 0.2, r["latency_fused_ms"], f"{r['fused_over_train']:.2f}x",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("CPU latency, batch 1 (ms)")
    ax.set_title("FastViT: train-time vs reparameterized (same outputs)")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def run_variant_table(out: Path, names: list[str], image_size: int, runs: int) -> list[dict]:
    rows = []
    for name in tqdm(names, desc="variants", unit="model", file=sys.stdout):
        rows.append(variant_report(name, image_size, runs))
    table = markdown_table(rows, image_size, runs)
    print(table)
    atomic_write_text(out / "variants.md", table)
    atomic_write_text(out / "variants.json", json.dumps(rows, indent=2))
    bar_chart(rows, out / "variants.png")
    bad = [r["variant"] for r in rows if not r["equivalent"]]
    if bad:
        raise RuntimeError(f"reparameterized outputs differ beyond {TOLERANCE}: {bad}")
    return rows


def run_training_stage(out: Path, args: argparse.Namespace) -> dict | None:
    try:
        from fastvit.train.demo_digits import run as train_digits
    except ImportError:  # training stack not installed in this build
        return None
    return train_digits(out / "digits", epochs=args.epochs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"),
                        help="folder for the reports (default: outputs/demo)")
    parser.add_argument("--variants", nargs="*", default=None, metavar="NAME",
                        help="variants for the table (default: all seven)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model")
    parser.add_argument("--epochs", type=int, default=None,
                        help="digits training epochs (default: the demo recipe)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for the latency columns (default 1: stable "
                             "on a shared machine, where extra OpenMP threads thrash)")
    parser.add_argument("--skip-training", action="store_true")


def main(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    if not args.skip_training:
        summary["digits"] = run_training_stage(args.out, args)
    torch.set_num_threads(args.threads)
    rows = run_variant_table(args.out, args.variants or fastvit.list_models(), args.image_size,
                             args.runs)
    summary["variants"] = rows
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=2))
    print(f"reports written to {args.out}/ (variants.md, variants.png, summary.json)")
    return 0
