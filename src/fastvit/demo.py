"""The project's main job (``fastvit demo`` / ``make demo``), end to end on a laptop.

1. (when the training stack is present) train fastvit_t8 on scikit-learn's
   bundled digits, evaluate, reparameterize, re-evaluate;
2. for every variant: randomize BatchNorm statistics and layer scales, fuse,
   check equivalence, count params/GMACs and time train-time vs fused on CPU.

Writes ``variants.md``, ``variants.json`` and ``variants.png`` to ``--out``.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from fastvit.bench.timing import time_model
from fastvit.errors import FastVitError
from fastvit.factory import create_model
from fastvit.files import atomic_write, atomic_write_text
from fastvit.models import (
    count_gmacs,
    count_params,
    list_models,
    max_abs_difference,
    randomize_model_stats,
    reparameterize,
)

TOLERANCE = 1e-5  # max |train - fused| / max |train output|


class NotEquivalentError(FastVitError):
    """A variant's reparameterized network does not compute what the train-time one does."""


def variant_report(name: str, image_size: int = 256, runs: int = 10, warmup: int = 3,
                   seed: int = 0) -> dict:
    """Build, randomize, fuse, verify and time one variant."""
    torch.manual_seed(seed)
    model = create_model(name).eval()
    randomize_model_stats(model, seed=seed)
    fused = reparameterize(model)
    x = torch.randn(1, 3, image_size, image_size)
    diff = max_abs_difference(model, fused, x)
    rel = max_abs_difference(model, fused, x, relative=True)
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


def run_variant_table(out: Path, names: list[str], image_size: int, runs: int,
                      log: Callable[[str], None] = print) -> list[dict]:
    """Verify and time every variant; raise :class:`NotEquivalentError` naming any that
    is not equivalent after fusion (the reports are written first, to show by how much)."""
    rows = []
    for name in tqdm(names, desc="variants", unit="model", file=sys.stdout):
        rows.append(variant_report(name, image_size, runs))
    table = markdown_table(rows, image_size, runs)
    log(table)
    atomic_write_text(out / "variants.md", table)
    atomic_write_text(out / "variants.json", json.dumps(rows, indent=2))
    bar_chart(rows, out / "variants.png")
    bad = [r for r in rows if not r["equivalent"]]
    if bad:
        worst = ", ".join(f"{r['variant']} (relative difference {r['max_rel_diff']:.2e})"
                          for r in bad)
        raise NotEquivalentError(f"reparameterization changed the outputs of {worst}, beyond "
                                 f"the tolerance {TOLERANCE:g}; see {out / 'variants.md'}")
    return rows


def run_demo(out: str | Path = "outputs/demo", *, variants: list[str] | None = None,
             image_size: int = 256, runs: int = 10, epochs: int | None = None,
             threads: int = 1, skip_training: bool = False,
             log: Callable[[str], None] = print) -> dict:
    """Train on the bundled digits (unless ``skip_training``), then verify and time every
    variant; writes ``variants.{md,json,png}`` and ``summary.json`` into ``out``.

    ``threads`` applies to the latency columns (1 is stable on a shared machine,
    where extra OpenMP threads thrash).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    if not skip_training:
        from fastvit.train.demo_digits import run as train_digits

        summary["digits"] = train_digits(out / "digits", epochs=epochs, log=log)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        summary["variants"] = run_variant_table(out, variants or list_models(), image_size,
                                                runs, log)
    finally:
        torch.set_num_threads(before)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log(f"reports written to {out}/ (variants.md, variants.png, summary.json)")
    return summary
