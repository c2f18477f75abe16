"""COCO box and mask AP through pycocotools (the official evaluation code)."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import numpy as np
import torch

from fastvit.extras import require

mask_utils = require("pycocotools.mask", "fastvit detect")
COCO = require("pycocotools.coco", "fastvit detect").COCO
COCOeval = require("pycocotools.cocoeval", "fastvit detect").COCOeval

#: names of the 12 numbers of ``COCOeval.summarize()``, in its order
SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                 "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def to_coco_results(image_id: int, output: dict[str, torch.Tensor],
                    category_ids: Sequence[int], mask_threshold: float = 0.5) -> list[dict]:
    """One image's Mask R-CNN output as COCO result entries (boxes ``[x, y, w, h]``,
    masks binarised at ``mask_threshold`` and RLE-encoded)."""
    boxes = output["boxes"].detach().float().cpu()
    if len(boxes) == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    rles: list[dict | None] = [None] * len(boxes)
    if "masks" in output:
        masks = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
    results = []
    for box, score, label, rle in zip(xywh, scores, labels, rles, strict=True):
        entry = {"image_id": int(image_id), "category_id": int(category_ids[label - 1]),
                 "bbox": [round(v, 3) for v in box], "score": float(score)}
        if rle is not None:
            entry["segmentation"] = rle
        results.append(entry)
    return results


def _project(result: dict, iou_type: str) -> dict:
    """The fields one IoU type needs: for masks no box, so that pycocotools takes
    the detection's area (used by the small/medium/large split) from the mask."""
    drop = "bbox" if iou_type == "segm" else "segmentation"
    return {k: v for k, v in result.items() if k != drop}


def coco_evaluate(coco_gt: COCO, results: list[dict], iou_types: Sequence[str] = ("bbox", "segm"),
                  image_ids: Sequence[int] | None = None, verbose: bool = True
                  ) -> dict[str, dict[str, float]]:
    """COCOeval for each IoU type; returns ``{iou_type: {AP, AP50, ..., ARl}}`` in [0, 1].

    ``image_ids`` restricts the evaluation (default: every image of ``coco_gt``).
    Without any detection every AP/AR is 0 (pycocotools cannot load an empty result set).
    """
    metrics: dict[str, dict[str, float]] = {}
    coco_gt = copy.deepcopy(coco_gt)  # COCOeval rewrites ground-truth segmentations in place
    ids = sorted(coco_gt.getImgIds() if image_ids is None else set(image_ids))
    for iou_type in iou_types:
        usable = [r for r in results if iou_type != "segm" or "segmentation" in r]
        if not usable:
            metrics[iou_type] = dict.fromkeys(SUMMARY_NAMES, 0.0)
            if verbose:
                print(f"{iou_type}: no detections, all AP/AR are 0")
            continue
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            coco_dt = coco_gt.loadRes([_project(r, iou_type) for r in usable])
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = ids
            evaluator.evaluate()
            evaluator.accumulate()
        if verbose:
            print(f"IoU metric: {iou_type}")
            evaluator.summarize()
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator.summarize()
        metrics[iou_type] = {name: float(v) for name, v in
                             zip(SUMMARY_NAMES, evaluator.stats, strict=True)}
    return metrics
