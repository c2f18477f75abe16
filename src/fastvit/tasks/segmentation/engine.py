"""Train, evaluate and run a FastViT Semantic FPN (single process or torchrun/DDP)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import PolynomialLR
from tqdm import tqdm

from fastvit.errors import DataError
from fastvit.tasks import common
from fastvit.tasks.segmentation.data import (
    IGNORE_INDEX,
    ADE20KSegmentation,
    EvalTransform,
    train_transforms,
)
from fastvit.tasks.segmentation.metrics import ConfusionMatrix
from fastvit.tasks.segmentation.model import SemanticFPN, build_semantic_fpn
from fastvit.tasks.segmentation.recipe import SegmentationRecipe

TASK = "segmentation"


def build_segmenter(recipe: SegmentationRecipe, *, with_pretrained: bool = True) -> SemanticFPN:
    return build_semantic_fpn(recipe.model, recipe.num_classes,
                              pretrained=recipe.pretrained if with_pretrained else None,
                              frozen_stages=recipe.frozen_stages, norm_eval=recipe.norm_eval,
                              drop_path_rate=recipe.drop_path_rate,
                              fpn_channels=recipe.fpn_channels,
                              head_channels=recipe.head_channels, head_norm=recipe.head_norm,
                              dropout=recipe.dropout)


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


def _padded_logits(model: nn.Module, image: torch.Tensor, min_size: int = 0) -> torch.Tensor:
    """Logits of ``image`` (N,3,H,W) of any size: pad right/bottom to a multiple of 32
    (and at least ``min_size``), run, crop the padding off again."""
    h, w = image.shape[-2:]
    ph = max(-(-h // 32) * 32, min_size) - h
    pw = max(-(-w // 32) * 32, min_size) - w
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph))
    return model(image)[..., :h, :w]


@torch.no_grad()
def infer_logits(model: nn.Module, image: torch.Tensor, mode: str = "whole",
                 window: int = 512, stride: int = 341) -> torch.Tensor:
    """Class logits (N,K,H,W) at the image's resolution.

    ``whole``: one pass over the padded image. ``slide``: ``window`` x ``window``
    crops every ``stride`` pixels (the last row/column aligned to the border, as
    mmseg's ``slide_inference``); overlapping logits are averaged.
    """
    if mode == "whole":
        return _padded_logits(model, image)
    if mode != "slide":
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    n, _, h, w = image.shape
    rows = max(h - window + stride - 1, 0) // stride + 1
    cols = max(w - window + stride - 1, 0) // stride + 1
    logits: torch.Tensor | None = None
    count = image.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = r * stride, c * stride
            y2, x2 = min(y1 + window, h), min(x1 + window, w)
            y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
            crop = _padded_logits(model, image[..., y1:y2, x1:x2], window)
            if logits is None:
                logits = crop.new_zeros(n, crop.shape[1], h, w, dtype=torch.float32)
            logits[..., y1:y2, x1:x2] += crop
            count[..., y1:y2, x1:x2] += 1
    return logits / count


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ADE20KSegmentation, runtime: common.Runtime, *,
             num_classes: int, mode: str = "whole", window: int = 512, stride: int = 341,
             workers: int = 2, amp: bool = False) -> dict:
    """mIoU / per-class IoU / pixel accuracy at the labels' original resolution; each
    rank scores its own images and the confusion matrices are summed."""
    model = common.unwrap(model)
    loader = common.eval_loader(dataset, 1, workers, runtime)
    was_training = model.training
    model.eval()
    conf = ConfusionMatrix(num_classes, IGNORE_INDEX)
    try:
        for image, label in tqdm(loader, desc="evaluate", disable=not runtime.is_main,
                                 dynamic_ncols=True):
            image, label = image.to(runtime.device), label.to(runtime.device)
            with common.autocast(runtime.device, amp):
                logits = infer_logits(model, image, mode, window, stride)
            logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear",
                                   align_corners=False)
            conf.update(logits.argmax(1), label)
    except DataError as err:
        raise common.clean_worker_error(err) from None
    finally:
        model.train(was_training)
    matrix = conf.matrix if conf.matrix is not None else torch.zeros(
        num_classes, num_classes, dtype=torch.int64, device=runtime.device)
    conf.matrix = common.all_reduce_sum(matrix, runtime)
    return conf.compute()


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def train(recipe: SegmentationRecipe, *, data_root: str | Path, out_dir: str | Path,
          train_split: str = "training", val_split: str | None = "validation",
          device: str | None = None, resume: str | Path | None = None) -> dict:
    """Train Semantic FPN on an ADE20K-layout folder; returns (and writes) the report.

    Writes ``out_dir/checkpoint.pt`` (every ``eval_every`` iterations and at the end),
    ``metrics.json`` (loss log, evaluations) and ``loss.png``.
    """
    runtime = common.init_runtime(device)
    try:
        return _train(recipe, runtime, Path(data_root), Path(out_dir), train_split,
                      val_split, resume)
    finally:
        common.shutdown(runtime)


def _train(recipe: SegmentationRecipe, runtime: common.Runtime, root: Path, out_dir: Path,
           train_split: str, val_split: str | None, resume: str | Path | None) -> dict:
    torch.manual_seed(recipe.seed + runtime.rank)
    train_set = ADE20KSegmentation(
        root, train_split, recipe.num_classes,
        train_transforms(recipe.crop_size, recipe.base_size, recipe.scale_range, recipe.hflip,
                         recipe.photometric))
    val_set = None
    if val_split is not None:
        val_set = ADE20KSegmentation(root, val_split, recipe.num_classes,
                                     EvalTransform(recipe.base_size))
    model = build_segmenter(recipe).to(runtime.device)
    if runtime.distributed and recipe.head_norm == "bn":
        model.head = nn.SyncBatchNorm.convert_sync_batchnorm(model.head)
    ddp_model = common.wrap_ddp(model, runtime)
    loader = common.train_loader(train_set, recipe.batch_size, recipe.workers, runtime,
                                 seed=recipe.seed)
    optimizer = common.adamw(model, recipe.lr, recipe.weight_decay)
    poly = PolynomialLR(optimizer, total_iters=recipe.iters, power=recipe.poly_power)
    scheduler = common.with_warmup(optimizer, poly, min(recipe.warmup_iters, recipe.iters),
                                   recipe.warmup_ratio)
    scaler = common.make_scaler(runtime.device, recipe.amp)
    start = 0
    if resume is not None:
        state = common.load_task_checkpoint(resume, TASK)
        start = common.restore_training_state(state, model, optimizer, scheduler, scaler)

    ckpt_path = out_dir / "checkpoint.pt"
    recipe_d = common.recipe_dict(recipe)
    evals: list[dict] = []

    def step_fn(batch: tuple) -> dict[str, torch.Tensor]:
        images, labels = (t.to(runtime.device, non_blocking=True) for t in batch)
        logits = ddp_model(images)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
        return {"loss": loss}

    def on_step_end(step: int) -> None:
        if step % recipe.eval_every and step != recipe.iters:
            return
        if runtime.is_main:
            common.save_task_checkpoint(ckpt_path, task=TASK, model=model, recipe=recipe_d,
                                        optimizer=optimizer, scheduler=scheduler,
                                        scaler=scaler, step=step)
        if val_set is not None:
            metrics = evaluate(model, val_set, runtime, num_classes=recipe.num_classes,
                               mode=recipe.eval_mode, window=recipe.crop_size,
                               stride=recipe.eval_stride, workers=recipe.workers,
                               amp=recipe.amp)
            evals.append({"step": step, **metrics})
            if runtime.is_main:
                print(f"iter {step}: mIoU {metrics['mIoU']:.4f}, aAcc {metrics['aAcc']:.4f}")
        common.barrier(runtime)

    history = common.fit(ddp_model, common.iterate_forever(loader), step_fn,
                         optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                         runtime=runtime, total_steps=recipe.iters, start_step=start,
                         amp=recipe.amp, clip_grad=recipe.clip_grad, log_every=recipe.log_every,
                         on_step_end=on_step_end, desc="segment train")
    report = {"task": TASK, "recipe": recipe_d, "world_size": runtime.world_size,
              "train": history, "eval": evals, "checkpoint": str(ckpt_path)}
    if runtime.is_main:
        common.write_json(out_dir / "metrics.json", report)
        common.plot_history(history, out_dir / "loss.png", "Semantic FPN training loss")
    return report


def load_segmenter(checkpoint: str | Path, device: torch.device | str = "cpu"
                   ) -> tuple[SemanticFPN, SegmentationRecipe]:
    """Rebuild a trained model from its checkpoint (eval mode) and its recipe."""
    state = common.load_task_checkpoint(checkpoint, TASK)
    recipe = common.load_recipe(SegmentationRecipe, overrides=state["recipe"])
    model = build_segmenter(recipe, with_pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), recipe
