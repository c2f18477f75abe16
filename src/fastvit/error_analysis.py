"""Where a classifier goes wrong: per-class accuracy, the confusion matrix, the worst mistakes.

``fastvit evaluate`` adds :func:`class_report` to its JSON results and, with an
output folder, draws the confusion matrix (:func:`plot_confusion`, up to
:data:`MAX_CONFUSION_CLASSES` classes) and a grid of the misclassified images
the model was most confident about (:func:`plot_worst`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastvit.files import atomic_path

MAX_CONFUSION_CLASSES = 50
log = logging.getLogger(__name__)


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int],
                     num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64),
                       np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def class_report(samples: dict[str, list], class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class accuracy (percent, with image counts) and the confusion matrix.

    ``samples`` holds parallel lists ``labels`` and ``predictions`` (class indices).
    Classes without images get accuracy None.
    """
    matrix = confusion_matrix(samples["labels"], samples["predictions"], len(class_names))
    per_class = {}
    for index, name in enumerate(class_names):
        count = int(matrix[index].sum())
        correct = int(matrix[index, index])
        per_class[name] = {"count": count, "correct": correct,
                           "top1": 100.0 * correct / count if count else None}
    return {"per_class": per_class, "confusion_matrix": matrix.tolist(),
            "class_names": list(class_names)}


def worst_mistakes(samples: dict[str, list], limit: int = 16) -> list[dict[str, Any]]:
    """The misclassified images, most confident first: ``{path, label, prediction,
    confidence}``."""
    wrong = [i for i, (t, p) in enumerate(zip(samples["labels"], samples["predictions"],
                                               strict=True)) if t != p]
    wrong.sort(key=lambda i: -samples["confidence"][i])
    return [{"path": samples["paths"][i], "label": int(samples["labels"][i]),
             "prediction": int(samples["predictions"][i]),
             "confidence": float(samples["confidence"][i])} for i in wrong[:limit]]


def format_per_class(report: dict[str, Any], limit: int = 10) -> str:
    """The ``limit`` least accurate classes, one line each."""
    rows = [(name, row) for name, row in report["per_class"].items() if row["count"]]
    rows.sort(key=lambda item: item[1]["top1"])
    shown = rows[:limit]
    title = ("per-class top-1" if len(shown) == len(rows)
             else f"per-class top-1, the {len(shown)} worst of {len(rows)} classes")
    lines = [f"{title}:"]
    lines += [f"  {name:<24} {row['top1']:6.2f}%  ({row['correct']}/{row['count']})"
              for name, row in shown]
    return "\n".join(lines)


def plot_confusion(report: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    """Row-normalized confusion matrix as a PNG (None above MAX_CONFUSION_CLASSES)."""
    names = report["class_names"]
    if len(names) > MAX_CONFUSION_CLASSES:
        log.info("no confusion-matrix plot for %d classes (at most %d); the matrix is in the "
                 "JSON results", len(names), MAX_CONFUSION_CLASSES)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.32 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (rows: share of each true class)")
    if len(names) <= 20:
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                ax.text(col, row, str(int(count)), ha="center", va="center", fontsize=7,
                        color="white" if rates[row, col] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path)


def plot_worst(mistakes: list[dict[str, Any]], class_names: Sequence[str],
               path: str | Path, columns: int = 4) -> Path | None:
    """A grid of misclassified images titled ``true -> predicted (confidence)``."""
    if not mistakes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastvit.data import load_rgb

    rows = -(-len(mistakes) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, mistakes, strict=False):
        ax.imshow(load_rgb(item["path"]).permute(1, 2, 0).numpy())
        ax.set_title(f"{class_names[item['label']]} -> {class_names[item['prediction']]}\n"
                     f"({100 * item['confidence']:.0f}%) {Path(item['path']).name}", fontsize=8)
    fig.suptitle("most confident mistakes (true -> predicted)")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
