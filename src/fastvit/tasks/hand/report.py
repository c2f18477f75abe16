"""Evaluation reports: metrics as JSON, and a PNG of predicted meshes and keypoints
drawn over the input images (ground-truth keypoints beside them when known)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fastvit.files import atomic_path, write_json
from fastvit.models import IMAGENET_MEAN, IMAGENET_STD

# FreiHAND skeleton: wrist to each finger's four keypoints (thumb, index, middle, ring, little)
BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
         (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
         (18, 19), (19, 20)]
FINGER_COLOURS = ["tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple"]


def examples_from_batch(batch: dict[str, Any], pred: dict[str, torch.Tensor], limit: int
                        ) -> list[dict[str, Any]]:
    """CPU copies of what :func:`save_examples_png` draws, for the first ``limit`` images."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    out = []
    for i in range(min(limit, batch["image"].shape[0])):
        image = (batch["image"][i].detach().float().cpu() * std + mean).clamp(0, 1)
        item = {"image": image.permute(1, 2, 0).numpy(),
                "pred_joints_2d": pred["joints_2d"][i].detach().float().cpu(),
                "pred_vertices_2d": pred["vertices_2d"][i].detach().float().cpu()}
        if "joints_2d" in batch and bool(batch.get("has_3d", torch.ones(1))[i]):
            item["gt_joints_2d"] = batch["joints_2d"][i].detach().float().cpu()
        out.append(item)
    return out


def _to_pixels(points: torch.Tensor, size: int) -> torch.Tensor:
    return (points + 1.0) * 0.5 * size


def _draw_skeleton(ax, uv: torch.Tensor, style: str, alpha: float = 1.0) -> None:
    for a, b in BONES:
        ax.plot([uv[a, 0], uv[b, 0]], [uv[a, 1], uv[b, 1]], style,
                color=FINGER_COLOURS[(b - 1) // 4], linewidth=1.2, alpha=alpha)
    ax.scatter(uv[:, 0], uv[:, 1], s=6, c="white", edgecolors="black", linewidths=0.4,
               alpha=alpha, zorder=3)


def save_examples_png(path: str | os.PathLike, examples: list[dict], faces: torch.Tensor,
                      size: int, title: str = "") -> Path:
    """Grid of images; each with the predicted mesh (faces), predicted skeleton (solid)
    and, when present, the ground-truth skeleton (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    cols = min(4, max(1, len(examples)))
    rows = max(1, -(-len(examples) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    faces = faces.long()
    for ax in axes.flat:
        ax.axis("off")
    for ax, ex in zip(axes.flat, examples, strict=False):
        ax.imshow(ex["image"], extent=(0, size, size, 0))
        verts = _to_pixels(ex["pred_vertices_2d"], size)
        if faces.numel():
            tris = verts[faces].numpy()
            ax.add_collection(PolyCollection(tris, facecolors=(0.95, 0.8, 0.7, 0.35),
                                             edgecolors=(0.6, 0.4, 0.3, 0.3), linewidths=0.2))
        _draw_skeleton(ax, _to_pixels(ex["pred_joints_2d"], size), "-")
        if "gt_joints_2d" in ex:
            _draw_skeleton(ax, _to_pixels(ex["gt_joints_2d"], size), "--", alpha=0.6)
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
    if title:
        fig.suptitle(title + ("  (solid: prediction, dashed: ground truth)"
                              if any("gt_joints_2d" in e for e in examples) else ""), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def write_report(out_dir: str | os.PathLike, report: dict[str, Any], examples: list[dict],
                 faces: torch.Tensor, size: int, name: str = "metrics.json") -> dict[str, str]:
    """``name`` (the report dict as JSON) and ``examples.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    files = {"metrics": str(write_json(out_dir / name, report))}
    if examples:
        m = report.get("metrics", {})
        title = (f"{report.get('model', '')} {report.get('split', '')}: "
                 f"PA-MPJPE {m.get('pa_mpjpe_mm', float('nan')):.1f} mm, "
                 f"PA-MPVPE {m.get('pa_mpvpe_mm', float('nan')):.1f} mm")
        files["examples"] = str(save_examples_png(out_dir / "examples.png", examples, faces,
                                                  size, title))
    return files
