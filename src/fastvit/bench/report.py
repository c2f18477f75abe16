"""Reports of ``fastvit bench``: JSON, a markdown table and the Pareto plot.

The plot is the paper's Figure 1 redrawn on the user's machine: measured
latency (x, log scale) against *published* ImageNet top-1 (y), one panel per
runtime, FastViT variants joined by a highlighted line, peers as labelled
points. Published accuracies are facts from papers (see
``fastvit/assets/published_top1.csv``), not measured here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fastvit.files import atomic_write, atomic_write_text
from fastvit.models import list_models

FASTVIT_COLOR, PEER_COLOR, TIMM_FASTVIT_COLOR = "#d62728", "#1f77b4", "#ff9896"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
    """One line per (model, runtime): latency median/p90, throughput, size, top-1."""
    lines = ["| model | form | runtime | precision | input | batch | median ms | p90 ms | "
             "throughput img/s (batch) | params M | published top-1 | status |",
             "|" + "---|" * 12]
    for r in rows:
        lat = r.get("latency") or {}
        thr = r.get("throughput") or {}
        size = r.get("image_size")
        throughput = (f"{thr['images_per_s']:.1f} ({thr['batch']})" if thr else "-")
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('note', '')}"
        lines.append(
            f"| {r['model']} | {r.get('form', '-')} | {r['runtime']} | {r.get('precision', '-')} "
            f"| {f'{size}x{size}' if size else '-'} | {r.get('batch', '-')} "
            f"| {_fmt(lat.get('median_ms'), '.2f')} | {_fmt(lat.get('p90_ms'), '.2f')} "
            f"| {throughput} | {_fmt(r.get('params_m'), '.2f')} "
            f"| {_fmt(r.get('published_top1'), '.1f')} | {status} |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    env = report["environment"]
    head = [
        "# fastvit bench",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {env['platform']}, {env['processor']}, {env['cpu_count']} CPUs, "
        f"{env['threads']} threads, device {env['device']}"
        + (f" ({env['gpu']})" if env.get("gpu") else "")
        + f"; torch {env['torch']}, onnxruntime {env['onnxruntime']}"
        + (f", executorch {env['executorch']}" if env.get("executorch") else "")
        + (f", openvino {env['openvino']}" if env.get("openvino") else "") + ".",
        "",
        f"CPU features: {env.get('isa_summary', '-')}. Threads: "
        f"{env.get('thread_policy', '-')}.",
        "",
        "Latency: median and p90 over the timed runs after warm-up. Published top-1: from the "
        "papers (fastvit/assets/published_top1.csv), not measured here; weights are random. "
        "The MobileCLIP image towers (fastvit_mci*) have none ('-'): they output a CLIP "
        "embedding, not ImageNet classes.",
        "",
    ]
    return "\n".join(head) + markdown_table(report["results"]) + "\n"


def plot_pareto(report: dict, path: Path) -> Path:
    """Latency vs published top-1, one panel per runtime (models without a published
    top-1 or without a result are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"]
            if r["status"] == "ok" and r.get("published_top1") is not None]
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    runtimes = list(dict.fromkeys(r["runtime"] for r in report["results"])) or ["-"]
    cols = min(3, len(runtimes))
    rows_n = math.ceil(len(runtimes) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.5 * cols, 5 * rows_n), squeeze=False)
    for ax in axes.flat[len(runtimes):]:
        ax.set_visible(False)
    order = {name: i for i, name in enumerate(list_models("all"))}  # T8 -> MA36 -> MCi0..4
    for ax, runtime in zip(axes.flat, runtimes, strict=False):
        subset = [r for r in rows if r["runtime"] == runtime]
        ours = sorted((r for r in subset if r["family"] == "fastvit"),
                      key=lambda r: order.get(r["model"], len(order)))
        if ours:
            ax.plot([r["latency"]["median_ms"] for r in ours],
                    [r["published_top1"] for r in ours], "-o", color=FASTVIT_COLOR, lw=2.5,
                    ms=7, label="FastViT (ours)", zorder=3)
        for r in ours:
            ax.annotate(r["model"].replace("fastvit_", "").upper(),
                        (r["latency"]["median_ms"], r["published_top1"]),
                        textcoords="offset points", xytext=(5, -11), fontsize=8,
                        color=FASTVIT_COLOR)
        timm_fastvit = [r for r in subset if r["model"].startswith("timm:fastvit")]
        if timm_fastvit:  # same published numbers as ours: unlabelled, one legend entry
            ax.scatter([r["latency"]["median_ms"] for r in timm_fastvit],
                       [r["published_top1"] for r in timm_fastvit], marker="x", s=36, zorder=2,
                       color=TIMM_FASTVIT_COLOR, label="timm FastViT")
        for r in (r for r in subset if r["family"] != "fastvit" and r not in timm_fastvit):
            ax.scatter(r["latency"]["median_ms"], r["published_top1"], marker="s", s=36,
                       zorder=2, color=PEER_COLOR)
            ax.annotate(r["model"].replace("timm:", "timm "),
                        (r["latency"]["median_ms"], r["published_top1"]),
                        textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.15, y=0.08)
        ax.set_xlabel(f"latency, ms (median, batch {subset[0]['batch'] if subset else '-'})")
        ax.set_ylabel("published ImageNet-1k top-1, %")
        ax.set_title(f"runtime: {runtime}")
        ax.grid(True, which="both", alpha=0.3)
        if ours or timm_fastvit:
            ax.legend(loc="upper left")  # the unreachable corner of a Pareto plot
    env = report["environment"]
    fig.suptitle(f"FastViT vs peers on {env['processor']} ({env['threads']} threads, "
                 f"{env['device']}) - published top-1 vs measured latency", fontsize=10)
    fig.text(0.01, 0.005, report["command"], fontsize=6, family="monospace")
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def write_reports(report: dict, out: Path) -> list[Path]:
    """``bench.json``, ``bench.md`` and ``pareto.png`` in ``out`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_text(out / "bench.json", json.dumps(report, indent=2) + "\n"),
             atomic_write_text(out / "bench.md", markdown_report(report))]
    paths.append(plot_pareto(report, out / "pareto.png"))
    return paths
