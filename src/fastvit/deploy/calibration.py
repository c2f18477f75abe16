"""Images for int8 post-training quantization, and how an int8 file is judged against fp32.

Shared by every int8 path (ONNX Runtime, ExecuTorch): calibration images are
spread over the classes of an ImageFolder (or the val split of WebDataset shards or
a Hugging Face dataset, :mod:`fastvit.data.sources`), and the fp32/int8 agreement is
scored on a labelled ImageFolder (class folder i = output i) or, without one,
on the calibration images. Both are preprocessed exactly as the exported file
expects (its ``fastvit.*`` metadata).

A classifier is judged by top-1 agreement (and accuracy with labels). An embedding
tower (:func:`is_embedding_model`: the MobileCLIP image towers, whose output is a CLIP
embedding) has no classes to agree on; it is judged by the cosine similarity of each
image's int8 and fp32 embeddings (mean and minimum) and by nearest-neighbour agreement
(:func:`embedding_agreement`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvit.data import ImageFolderDataset
from fastvit.data.shards import ShardDataset
from fastvit.data.sources import HF, SHARDS, resolve_source
from fastvit.deploy.verification import check_agreement, check_cosine
from fastvit.errors import ConfigError, DataError
from fastvit.models import VARIANTS
from fastvit.pipeline import Loaded

#: how the nearest-neighbour agreement of an embedding model is defined (stored in reports)
RETRIEVAL_AGREEMENT = (
    "share of scored images whose nearest neighbour among the other scored images' fp32 "
    "embeddings (cosine) is the same for the image's int8 embedding as for its fp32 one")


def is_embedding_model(loaded: Loaded) -> bool:
    """Whether the model outputs an embedding rather than class scores: a variant of the
    ``mobileclip`` family (its ``head.fc`` is the CLIP projection) whose weights carry no
    class names. A tower fine-tuned as a classifier (``fastvit train`` stores the
    folder's class names) is a classifier again."""
    spec = VARIANTS.get(loaded.variant)
    return (spec is not None and spec.family == "mobileclip" and not loaded.class_names
            and not getattr(loaded.model, "features_only", False))


def check_gates(loaded: Loaded, min_cosine: float | None) -> None:
    """Refuse ``--min-cosine`` for a classifier (its gate is ``--min-agreement``)."""
    if min_cosine is not None and not is_embedding_model(loaded):
        raise ConfigError(f"--min-cosine is for embedding models (the MobileCLIP image "
                          f"towers); {loaded.variant} from {loaded.source} is a classifier: "
                          f"use --min-agreement (top-1 agreement)")


def spread_indices(targets: Sequence[int], count: int) -> list[int]:
    """``count`` sample indices spread evenly over a class-sorted dataset (all classes
    get a share), deterministic."""
    total = len(targets)
    if count >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def folder_images(dataset: Any, indices: Sequence[int]) -> Iterator[torch.Tensor]:
    """Decoded, preprocessed images of ``dataset`` at ``indices`` (unreadable ones skipped).
    WebDataset shards are read front to back, decoding only those positions."""
    if isinstance(dataset, ShardDataset):
        items = dataset.items_at(set(indices))
    else:
        items = (dataset[i] for i in indices)
    for item in items:
        if isinstance(item, tuple):
            yield item[0]


def open_folder(path: str | Path, transform, what: str) -> Any:
    """An image folder (``DIR/<class>/<image>``), or the val split (else train) of any
    other ``--data`` source: WebDataset shards, a Hugging Face dataset."""
    source = resolve_source(str(path))
    if source.kind in (SHARDS, HF):
        try:
            return source.open_split("val", transform)
        except DataError:
            return source.open_split("train", transform)
    if not Path(path).is_dir():
        raise DataError(f"{what} folder {path} does not exist")
    return ImageFolderDataset(path, transform, bad_images="skip")


def _targets(dataset: Any) -> Sequence[int]:
    if isinstance(dataset, ImageFolderDataset):
        return [t for _, t in dataset.samples]
    if isinstance(dataset, ShardDataset):
        return range(len(dataset))  # written in class order: positions spread over classes
    return dataset.targets


def _all_items(dataset: Any) -> list[tuple[torch.Tensor, int]]:
    items = iter(dataset) if isinstance(dataset, ShardDataset) else (
        dataset[i] for i in range(len(dataset)))
    return [p for p in items if isinstance(p, tuple)]


@dataclass
class Int8Sets:
    """Calibration images (lazily decoded) and the images the int8 model is scored on."""

    calibration: Any  # ImageFolderDataset, ShardDataset or HFImageDataset
    picked: list[int]
    images: list[torch.Tensor]
    labels: list[int] | None
    scored_on: str

    def calibration_images(self) -> Iterator[torch.Tensor]:
        return folder_images(self.calibration, self.picked)


def int8_sets(loaded: Loaded, transform, calibration: str | Path, *, calibration_size: int,
              eval_dir: str | Path | None) -> Int8Sets:
    """Open the calibration folder (``calibration_size`` images spread over its classes)
    and the labelled ``eval_dir`` (else score on the calibration images). For an
    embedding model ``eval_dir``'s labels are not used (``labels`` is None)."""
    if calibration_size < 1:
        raise ConfigError(f"--calibration-size must be >= 1, got {calibration_size}")
    calib = open_folder(calibration, transform, "calibration")
    picked = spread_indices(_targets(calib), calibration_size)
    if eval_dir is None:
        return Int8Sets(calib, picked, list(folder_images(calib, picked)), None,
                        f"the {len(picked)} calibration images (no --eval set given)")
    evaluation = open_folder(eval_dir, transform, "evaluation")
    if is_embedding_model(loaded):
        images = [p[0] for p in _all_items(evaluation)]
        return Int8Sets(calib, picked, images, None, f"{eval_dir} ({len(images)} images)")
    if len(evaluation.classes) > loaded.num_classes:
        raise DataError(f"{eval_dir} has {len(evaluation.classes)} class folders but the "
                        f"model predicts {loaded.num_classes} classes")
    pairs = _all_items(evaluation)
    return Int8Sets(calib, picked, [p[0] for p in pairs], [p[1] for p in pairs],
                    f"{eval_dir} ({len(pairs)} labelled images)")


def agreement(fp32: np.ndarray, int8: np.ndarray, labels: Sequence[int] | None) -> dict:
    """fp32/int8 top-1 agreement, and both accuracies when ``labels`` are given."""
    report = {"images": len(fp32), "top1_agreement": float((fp32 == int8).mean())}
    if labels is not None:
        y = np.asarray(labels)
        report.update(fp32_top1=float((fp32 == y).mean()), int8_top1=float((int8 == y).mean()))
        report["top1_difference"] = report["int8_top1"] - report["fp32_top1"]
    return report


def nearest_neighbours(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """For each query i, the index of its most cosine-similar gallery row other than row
    i (queries and gallery: L2-normalized rows of the same images, N >= 2)."""
    similarity = queries @ gallery.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def embedding_agreement(fp32: np.ndarray, int8: np.ndarray) -> dict:
    """How far int8 embeddings (N, D) stay from fp32 ones: the cosine similarity of each
    image's pair (mean and minimum) and the nearest-neighbour agreement
    (:data:`RETRIEVAL_AGREEMENT`: an int8 query searched against an index of fp32
    embeddings finds what the fp32 query finds; None for fewer than 2 images)."""
    a = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True).clip(min=1e-12)
    b = int8 / np.linalg.norm(int8, axis=1, keepdims=True).clip(min=1e-12)
    cosine = (a * b).sum(axis=1)
    report = {"images": len(a), "output": "embedding", "embedding_dim": int(a.shape[1]),
              "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
              "retrieval_agreement": None, "retrieval_agreement_is": RETRIEVAL_AGREEMENT}
    if len(a) >= 2:
        report["retrieval_agreement"] = float(
            (nearest_neighbours(a, a) == nearest_neighbours(b, a)).mean())
    return report


def score_int8(fp32: np.ndarray, int8: np.ndarray, sets: Int8Sets, *, embedding: bool,
               min_agreement: float | None, min_cosine: float | None) -> dict:
    """The fp32/int8 report of the outputs (N, D) of both files on ``sets.images``; raises
    :class:`~fastvit.deploy.verification.ExportVerificationError` below a gate.

    Classifier: top-1 agreement (``--min-agreement``). Embedding model: cosine
    similarity (``--min-cosine`` gates the mean) and nearest-neighbour agreement
    (``--min-agreement`` gates it)."""
    if not embedding:
        report = agreement(fp32.argmax(axis=1), int8.argmax(axis=1), sets.labels)
        check_agreement(report["top1_agreement"], min_agreement, sets.scored_on)
        return report
    report = embedding_agreement(fp32, int8)
    check_cosine(report["cosine_mean"], min_cosine, sets.scored_on)
    if min_agreement is not None and report["retrieval_agreement"] is None:
        raise ConfigError("nearest-neighbour agreement (--min-agreement) needs at least 2 "
                          "scored images")
    if report["retrieval_agreement"] is not None:
        check_agreement(report["retrieval_agreement"], min_agreement, sets.scored_on,
                        what="int8 embeddings find the fp32 nearest neighbour")
    return report


def int8_summary(report: dict) -> str:
    """One line for the terminal."""
    if report.get("output") == "embedding":
        retrieval = report["retrieval_agreement"]
        return (f"wrote {report['int8']}: {report.get('method', 'int8')} "
                f"({report['calibration_images']} calibration images); int8/fp32 embedding "
                f"cosine mean {report['cosine_mean']:.4f}, min {report['cosine_min']:.4f}"
                + (f", nearest-neighbour agreement {retrieval:.1%}" if retrieval is not None
                   else "") + f" on {report['scored_on']}")
    line = (f"wrote {report['int8']}: {report.get('method', 'int8')} "
            f"({report['calibration_images']} calibration images); top-1 agreement with fp32 "
            f"{report['top1_agreement']:.1%} on {report['scored_on']}")
    if "fp32_top1" in report:
        line += (f"; top-1 fp32 {report['fp32_top1']:.1%}, int8 {report['int8_top1']:.1%} "
                 f"({100 * report['top1_difference']:+.1f} points)")
    return line
