"""Train, evaluate and run a FastViT Mask R-CNN (single process or torchrun/DDP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from tqdm import tqdm

from fastvit.errors import DataError
from fastvit.run.device import autocast
from fastvit.run.distributed import DistEnv, broadcast_object, gather_lists
from fastvit.run.evaluation import evaluation_mode
from fastvit.run.loop import StepOutput
from fastvit.run.lr_schedule import LrSchedule
from fastvit.run.recipes import stored_recipe
from fastvit.run.store import load_run_checkpoint, resolve_trained
from fastvit.run.training import TaskSpec, train_task
from fastvit.run.worker_errors import clean_worker_error
from fastvit.tasks.detection.data import CocoInstances, coco_dataset
from fastvit.tasks.detection.metrics import coco_evaluate, to_coco_results
from fastvit.tasks.detection.model import build_mask_rcnn
from fastvit.tasks.detection.recipe import DEFAULT_RECIPE, DetectionRecipe
from fastvit.tasks.shared import eval_loader, list_collate, run_settings, task_header

TASK = "detection"


def build_detector(recipe: DetectionRecipe, num_classes: int, *,
                   with_pretrained: bool = True) -> MaskRCNN:
    model, head = recipe.model, recipe.head
    return build_mask_rcnn(model.variant, num_classes,
                           pretrained=model.pretrained if with_pretrained else None,
                           frozen_stages=recipe.backbone.frozen_stages,
                           norm_eval=recipe.backbone.norm_eval,
                           drop_path_rate=model.drop_path, min_size=recipe.data.min_size,
                           max_size=recipe.data.max_size, fpn_channels=head.fpn_channels,
                           box_head_dim=head.box_dim, mask_head_channels=head.mask_channels,
                           rois_per_image=head.rois_per_image,
                           rpn_proposals_train=head.rpn_proposals_train,
                           rpn_proposals_test=head.rpn_proposals_test)


def base_dataset(dataset: Any) -> CocoInstances:
    """The validated ``CocoInstances`` under the transforms-v2 wrapper."""
    return dataset._dataset if hasattr(dataset, "_dataset") else dataset


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


@torch.no_grad()
def predict_coco(model: nn.Module, dataset: Any, env: DistEnv, *, batch_size: int = 2,
                 workers: int = 2, amp_dtype: torch.dtype | None = None) -> list[dict]:
    """COCO-format detections for this rank's share of ``dataset``."""
    category_ids = base_dataset(dataset).category_ids
    loader = eval_loader(dataset, batch_size, workers, env, collate_fn=list_collate)
    results: list[dict] = []
    with evaluation_mode(model) as net:
        try:
            for images, targets in tqdm(loader, desc="evaluate", disable=not env.is_main,
                                        dynamic_ncols=True, leave=False):
                with autocast(env.device, amp_dtype):
                    outputs = net([im.to(env.device, non_blocking=True) for im in images])
                for target, output in zip(targets, outputs, strict=True):
                    results += to_coco_results(target["image_id"], output, category_ids)
        except DataError as err:
            raise clean_worker_error(err) from None
    return results


def evaluate_detector(model: nn.Module, dataset: Any, env: DistEnv, *, batch_size: int = 2,
                      workers: int = 2, amp_dtype: torch.dtype | None = None,
                      verbose: bool = True) -> dict:
    """Box and mask AP on ``dataset``: predictions are gathered on rank 0, which alone
    runs COCOeval, and the metrics are shared with every rank."""
    results = predict_coco(model, dataset, env, batch_size=batch_size, workers=workers,
                           amp_dtype=amp_dtype)
    results = gather_lists(results, env)
    metrics = {}
    if env.is_main:
        base = base_dataset(dataset)
        metrics = coco_evaluate(base.coco, results, image_ids=base.ids, verbose=verbose)
    return broadcast_object(metrics, env)


def summary_line(metrics: dict) -> str:
    """``box AP 0.389 (AP50 0.61, AP75 0.42), mask AP 0.355 (...)``."""
    parts = []
    for key, name in (("bbox", "box"), ("segm", "mask")):
        m = metrics.get(key)
        if m:
            parts.append(f"{name} AP {m['AP']:.4f} (AP50 {m['AP50']:.4f}, AP75 {m['AP75']:.4f})")
    return ", ".join(parts) or "no metrics"


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def _to_device(images: Sequence[torch.Tensor], targets: Sequence[dict],
               device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                for k, v in t.items()} for t in targets]
    return images, targets


def train(recipe: DetectionRecipe, *, train_images: str | Path, train_ann: str | Path,
          out_dir: str | Path, val_images: str | Path | None = None,
          val_ann: str | Path | None = None, device: str | None = None,
          resume: str | Path | None = None, eval_batch_size: int = 2,
          max_steps: int | None = None, threads: int | None = None,
          compiled: bool = False) -> dict:
    """Train Mask R-CNN on a COCO split; returns (and writes) the report.

    Writes ``out_dir/ckpt_step*.pt`` (each epoch), ``best.pt`` (best box AP),
    ``metrics.jsonl``, ``metrics.json`` (loss log, per-epoch COCO metrics) and
    ``loss.png``.
    """
    recipe.validate()
    train_set = coco_dataset(train_images, train_ann, train=True, hflip=recipe.data.hflip,
                             scales=recipe.data.train_scales)
    base = base_dataset(train_set)
    val_set = None
    if val_ann is not None:
        val_set = coco_dataset(val_images, val_ann, train=False)
        if base_dataset(val_set).category_ids != base.category_ids:
            raise DataError(f"categories of {val_ann} differ from those of {train_ann}")

    def build(env: DistEnv, fresh: bool) -> TaskSpec:
        from fastvit.run.device import resolve_amp

        model = build_detector(recipe, len(base.category_ids))
        amp_dtype = resolve_amp(recipe.run.amp, env.device)

        def step(net: nn.Module, batch: tuple) -> StepOutput:
            images, targets = _to_device(*batch, env.device)
            parts = net(images, targets)
            return StepOutput({"loss": sum(parts.values()), **parts}, len(images))

        def run_eval(net: nn.Module) -> dict:
            return evaluate_detector(net, val_set, env, batch_size=eval_batch_size,
                                     workers=recipe.data.workers, amp_dtype=amp_dtype,
                                     verbose=False)

        return TaskSpec(model, train_set, step, lambda per_epoch, total: lr_schedule(
                            recipe, per_epoch, total), recipe.optim.lr,
                        recipe.optim.weight_decay,
                        metadata={"variant": recipe.model.variant,
                                  "class_names": base.class_names,
                                  "category_ids": base.category_ids},
                        epochs=recipe.schedule.epochs, collate_fn=list_collate,
                        evaluate=run_eval if val_set is not None else None,
                        score=lambda m: m["bbox"]["AP"] if m else float("-inf"),
                        eval_every_epochs=recipe.run.eval_every,
                        header=[task_header(TASK, recipe, len(train_set), env),
                                recipe.describe()],
                        plot_metrics={"box AP": "bbox.AP", "mask AP": "segm.AP"},
                        plot_title="COCO AP")

    return train_task(TASK, recipe, run_settings(recipe, out_dir=out_dir, device=device,
                                                 resume=resume, max_steps=max_steps,
                                                 threads=threads, compiled=compiled), build)


def lr_schedule(recipe: DetectionRecipe, steps_per_epoch: int, total_steps: int) -> LrSchedule:
    """mmdet's 1x: linear warmup from ``warmup_ratio`` x lr over ``warmup_iters`` steps,
    multiplied into a step decay (x ``lr_gamma`` after each of the ``lr_steps`` epochs)."""
    s = recipe.schedule
    return LrSchedule("step", warmup_steps=min(s.warmup_iters, total_steps),
                      warmup_start=s.warmup_ratio, gamma=s.lr_gamma,
                      milestones=tuple(e * steps_per_epoch for e in s.lr_steps))


# ---------------------------------------------------------------------------
# Loading a trained model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedDetector:
    """A trained detector in eval mode, with what it was trained with."""

    model: MaskRCNN
    recipe: DetectionRecipe
    metadata: dict  # class_names, category_ids (COCO ids of labels 1..K), variant
    device: torch.device

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def category_ids(self) -> list[int]:
        return list(self.metadata["category_ids"])


def load_detector(checkpoint: str | Path, device: torch.device | str = "cpu"
                  ) -> LoadedDetector:
    """Rebuild a trained detector from its checkpoint (a file, or a run folder: its
    ``best.pt``, else its newest checkpoint)."""
    path = resolve_trained(checkpoint)
    state = load_run_checkpoint(path, TASK)
    recipe = stored_recipe(DetectionRecipe, state["config"], DEFAULT_RECIPE, "tasks", str(path))
    meta = dict(state["metadata"])
    model = build_detector(recipe, len(meta["category_ids"]), with_pretrained=False)
    model.load_state_dict(state["model"])
    device = torch.device(device)
    return LoadedDetector(model.to(device).eval(), recipe, meta, device)
