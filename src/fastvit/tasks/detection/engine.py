"""Train, evaluate and run a FastViT Mask R-CNN (single process or torchrun/DDP)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR
from torchvision.models.detection import MaskRCNN
from tqdm import tqdm

from fastvit.errors import DataError
from fastvit.tasks import common
from fastvit.tasks.detection.data import CocoInstances, coco_dataset
from fastvit.tasks.detection.metrics import coco_evaluate, to_coco_results
from fastvit.tasks.detection.model import build_mask_rcnn
from fastvit.tasks.detection.recipe import DetectionRecipe

TASK = "detection"


def build_detector(recipe: DetectionRecipe, num_classes: int, *,
                   with_pretrained: bool = True) -> MaskRCNN:
    return build_mask_rcnn(recipe.model, num_classes,
                           pretrained=recipe.pretrained if with_pretrained else None,
                           frozen_stages=recipe.frozen_stages, norm_eval=recipe.norm_eval,
                           drop_path_rate=recipe.drop_path_rate, min_size=recipe.min_size,
                           max_size=recipe.max_size, fpn_channels=recipe.fpn_channels,
                           box_head_dim=recipe.box_head_dim,
                           mask_head_channels=recipe.mask_head_channels,
                           rois_per_image=recipe.rois_per_image,
                           rpn_proposals_train=recipe.rpn_proposals_train,
                           rpn_proposals_test=recipe.rpn_proposals_test)


def base_dataset(dataset: Any) -> CocoInstances:
    """The validated ``CocoInstances`` under the transforms-v2 wrapper."""
    return dataset._dataset if hasattr(dataset, "_dataset") else dataset


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


@torch.no_grad()
def predict_coco(model: nn.Module, dataset: Any, runtime: common.Runtime, *,
                 batch_size: int = 2, workers: int = 2, amp: bool = False) -> list[dict]:
    """COCO-format detections for this rank's share of ``dataset``."""
    category_ids = base_dataset(dataset).category_ids
    loader = common.eval_loader(dataset, batch_size, workers, runtime,
                                collate_fn=common.list_collate)
    was_training = model.training
    model.eval()
    results: list[dict] = []
    try:
        for images, targets in tqdm(loader, desc="evaluate", disable=not runtime.is_main,
                                    dynamic_ncols=True):
            with common.autocast(runtime.device, amp):
                outputs = model([im.to(runtime.device, non_blocking=True) for im in images])
            for target, output in zip(targets, outputs, strict=True):
                results += to_coco_results(target["image_id"], output, category_ids)
    except DataError as err:
        raise common.clean_worker_error(err) from None
    finally:
        model.train(was_training)
    return results


def evaluate(model: nn.Module, dataset: Any, runtime: common.Runtime, *, batch_size: int = 2,
             workers: int = 2, amp: bool = False, verbose: bool = True) -> dict:
    """Box and mask AP on ``dataset`` (predictions gathered on rank 0, which alone
    runs COCOeval; other ranks return ``{}``)."""
    results = predict_coco(common.unwrap(model), dataset, runtime, batch_size=batch_size,
                           workers=workers, amp=amp)
    results = common.gather_lists(results, runtime)
    if not runtime.is_main:
        return {}
    base = base_dataset(dataset)
    return coco_evaluate(base.coco, results, image_ids=base.ids, verbose=verbose)


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
          resume: str | Path | None = None, eval_batch_size: int = 2) -> dict:
    """Train Mask R-CNN on a COCO split; returns (and writes) the metrics report.

    Writes ``out_dir/checkpoint.pt`` (model + optimizer state, every epoch),
    ``metrics.json`` (loss log, per-epoch COCO metrics) and ``loss.png``.
    """
    runtime = common.init_runtime(device)
    try:
        return _train(recipe, runtime, Path(out_dir), train_images, train_ann, val_images,
                      val_ann, resume, eval_batch_size)
    finally:
        common.shutdown(runtime)


def _train(recipe: DetectionRecipe, runtime: common.Runtime, out_dir: Path,
           train_images: str | Path, train_ann: str | Path, val_images: str | Path | None,
           val_ann: str | Path | None, resume: str | Path | None, eval_batch_size: int) -> dict:
    torch.manual_seed(recipe.seed + runtime.rank)
    train_set = coco_dataset(train_images, train_ann, train=True, hflip=recipe.hflip,
                             scales=recipe.train_scales)
    base = base_dataset(train_set)
    val_set = None
    if val_ann is not None:
        val_set = coco_dataset(val_images, val_ann, train=False)
        if base_dataset(val_set).category_ids != base.category_ids:
            raise DataError(f"categories of {val_ann} differ from those of {train_ann}")
    extra = {"class_names": base.class_names, "category_ids": base.category_ids}

    model = build_detector(recipe, len(base.category_ids)).to(runtime.device)
    ddp_model = common.wrap_ddp(model, runtime)
    loader = common.train_loader(train_set, recipe.batch_size, recipe.workers, runtime,
                                 collate_fn=common.list_collate, seed=recipe.seed)
    iters_per_epoch = len(loader)
    total = recipe.epochs * iters_per_epoch
    optimizer = common.adamw(model, recipe.lr, recipe.weight_decay)
    steps = MultiStepLR(optimizer, [e * iters_per_epoch for e in recipe.lr_steps],
                        recipe.lr_gamma)
    scheduler = common.with_warmup(optimizer, steps, min(recipe.warmup_iters, total),
                                   recipe.warmup_ratio)
    scaler = common.make_scaler(runtime.device, recipe.amp)
    start = 0
    if resume is not None:
        state = common.load_task_checkpoint(resume, TASK)
        start = common.restore_training_state(state, model, optimizer, scheduler, scaler)

    ckpt_path = out_dir / "checkpoint.pt"
    evals: list[dict] = []
    recipe_d = common.recipe_dict(recipe)

    def step_fn(batch: tuple) -> dict[str, torch.Tensor]:
        images, targets = _to_device(*batch, runtime.device)
        losses = ddp_model(images, targets)
        return {"loss": sum(losses.values()), **losses}

    def on_step_end(step: int) -> None:
        if step % iters_per_epoch:
            return
        epoch = step // iters_per_epoch
        if runtime.is_main:
            common.save_task_checkpoint(ckpt_path, task=TASK, model=model, recipe=recipe_d,
                                        extra={**extra, "epoch": epoch}, optimizer=optimizer,
                                        scheduler=scheduler, scaler=scaler, step=step)
        if val_set is not None and (epoch % recipe.eval_every_epochs == 0
                                    or epoch == recipe.epochs):
            metrics = evaluate(model, val_set, runtime, batch_size=eval_batch_size,
                               workers=recipe.workers, amp=recipe.amp)
            evals.append({"epoch": epoch, "step": step, **metrics})
        common.barrier(runtime)

    history = common.fit(ddp_model, common.iterate_forever(loader, start // iters_per_epoch),
                         step_fn, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                         runtime=runtime, total_steps=total, start_step=start, amp=recipe.amp,
                         clip_grad=recipe.clip_grad, log_every=recipe.log_every,
                         on_step_end=on_step_end, desc="detect train")
    report = {"task": TASK, "recipe": recipe_d, "iters_per_epoch": iters_per_epoch,
              "world_size": runtime.world_size, "train": history, "eval": evals,
              "checkpoint": str(ckpt_path)}
    if runtime.is_main:
        common.write_json(out_dir / "metrics.json", report)
        common.plot_history(history, out_dir / "loss.png", "Mask R-CNN training loss")
    return report


# ---------------------------------------------------------------------------
# Loading a trained model
# ---------------------------------------------------------------------------


def load_detector(checkpoint: str | Path, device: torch.device | str = "cpu"
                  ) -> tuple[MaskRCNN, dict]:
    """Rebuild a trained detector from its checkpoint; returns it with its metadata
    (``class_names``, ``category_ids``, ``recipe``)."""
    state = common.load_task_checkpoint(checkpoint, TASK)
    recipe = common.load_recipe(DetectionRecipe, overrides=state["recipe"])
    extra = dict(state["extra"])
    model = build_detector(recipe, len(extra["category_ids"]), with_pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), {**extra, "recipe": recipe}
