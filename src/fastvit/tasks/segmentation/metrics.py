"""Segmentation metrics from a confusion matrix (rows: ground truth, columns: prediction).

mIoU follows mmseg/ADE20K: IoU per class = TP / (TP + FP + FN); classes absent from
both ground truth and prediction (union 0) are NaN and left out of the mean.
"""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``num_classes x num_classes`` int64 counts; pixels labelled ``ignore_index`` are skipped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"differ in shape")
    keep = target != ignore_index
    target, pred = target[keep].long(), pred[keep].long()
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target labels must be in 0..{num_classes - 1} or {ignore_index}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion(conf: torch.Tensor) -> dict:
    """mIoU, per-class IoU, pixel accuracy (aAcc) and mean class accuracy (mAcc)."""
    conf = conf.double()
    tp = conf.diag()
    gt, predicted = conf.sum(1), conf.sum(0)
    union = gt + predicted - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = conf.sum()
    return {
        "mIoU": float(iou.nanmean()) if (union > 0).any() else float("nan"),
        "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
        "mAcc": float(acc.nanmean()) if (gt > 0).any() else float("nan"),
        "IoU": iou.tolist(),
        "Acc": acc.tolist(),
    }


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches (on the prediction's device)."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        conf = confusion_matrix(pred, target.to(pred.device), self.num_classes,
                                self.ignore_index)
        self.matrix = conf if self.matrix is None else self.matrix + conf

    def compute(self) -> dict:
        if self.matrix is None:
            return metrics_from_confusion(torch.zeros(self.num_classes, self.num_classes))
        return metrics_from_confusion(self.matrix.cpu())
