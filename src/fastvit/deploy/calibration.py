"""Images for int8 post-training quantization: calibration and labelled scoring sets.

Shared by every int8 path (ONNX Runtime, ExecuTorch): calibration images are
spread over the classes of an ImageFolder, and the fp32/int8 agreement is
scored on a labelled ImageFolder (class folder i = output i) or, without one,
on the calibration images. Both are preprocessed exactly as the exported file
expects (its ``fastvit.*`` metadata).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastvit.data import ImageFolderDataset
from fastvit.errors import ConfigError, DataError
from fastvit.pipeline import Loaded


def spread_indices(targets: Sequence[int], count: int) -> list[int]:
    """``count`` sample indices spread evenly over a class-sorted dataset (all classes
    get a share), deterministic."""
    total = len(targets)
    if count >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def folder_images(dataset: ImageFolderDataset, indices: Sequence[int]) -> Iterator[torch.Tensor]:
    """Decoded, preprocessed images of ``dataset`` at ``indices`` (unreadable ones skipped)."""
    for i in indices:
        item = dataset[i]
        if isinstance(item, tuple):
            yield item[0]


def open_folder(path: str | Path, transform, what: str) -> ImageFolderDataset:
    if not Path(path).is_dir():
        raise DataError(f"{what} folder {path} does not exist")
    return ImageFolderDataset(path, transform, bad_images="skip")


@dataclass
class Int8Sets:
    """Calibration images (lazily decoded) and the images the int8 model is scored on."""

    calibration: ImageFolderDataset
    picked: list[int]
    images: list[torch.Tensor]
    labels: list[int] | None
    scored_on: str

    def calibration_images(self) -> Iterator[torch.Tensor]:
        return folder_images(self.calibration, self.picked)


def int8_sets(loaded: Loaded, transform, calibration: str | Path, *, calibration_size: int,
              eval_dir: str | Path | None) -> Int8Sets:
    """Open the calibration folder (``calibration_size`` images spread over its classes)
    and the labelled ``eval_dir`` (else score on the calibration images)."""
    if calibration_size < 1:
        raise ConfigError(f"--calibration-size must be >= 1, got {calibration_size}")
    calib = open_folder(calibration, transform, "calibration")
    picked = spread_indices([t for _, t in calib.samples], calibration_size)
    if eval_dir is None:
        return Int8Sets(calib, picked, list(folder_images(calib, picked)), None,
                        f"the {len(picked)} calibration images (no --eval set given)")
    evaluation = open_folder(eval_dir, transform, "evaluation")
    if len(evaluation.classes) > loaded.num_classes:
        raise DataError(f"{eval_dir} has {len(evaluation.classes)} class folders but the "
                        f"model predicts {loaded.num_classes} classes")
    pairs = [p for p in (evaluation[i] for i in range(len(evaluation))) if isinstance(p, tuple)]
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


def int8_summary(report: dict) -> str:
    """One line for the terminal."""
    line = (f"wrote {report['int8']}: {report.get('method', 'int8')} "
            f"({report['calibration_images']} calibration images); top-1 agreement with fp32 "
            f"{report['top1_agreement']:.1%} on {report['scored_on']}")
    if "fp32_top1" in report:
        line += (f"; top-1 fp32 {report['fp32_top1']:.1%}, int8 {report['int8_top1']:.1%} "
                 f"({100 * report['top1_difference']:+.1f} points)")
    return line
