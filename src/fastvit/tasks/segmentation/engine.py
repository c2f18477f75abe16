"""Train, evaluate and run a FastViT Semantic FPN (single process or torchrun/DDP)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate
from tqdm import tqdm

from fastvit.errors import DataError
from fastvit.run.device import autocast, resolve_amp
from fastvit.run.distributed import DistEnv, all_reduce_sum
from fastvit.run.evaluation import evaluation_mode
from fastvit.run.loop import StepOutput
from fastvit.run.lr_schedule import LrSchedule
from fastvit.run.recipes import stored_recipe
from fastvit.run.store import load_run_checkpoint, resolve_trained
from fastvit.run.training import TaskSpec, train_task
from fastvit.run.worker_errors import clean_worker_error
from fastvit.tasks.segmentation.data import (
    IGNORE_INDEX,
    ADE20KSegmentation,
    EvalTransform,
    train_transforms,
)
from fastvit.tasks.segmentation.metrics import ConfusionMatrix
from fastvit.tasks.segmentation.model import SemanticFPN, build_semantic_fpn
from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE, SegmentationRecipe
from fastvit.tasks.shared import eval_loader, run_settings, task_header

TASK = "segmentation"


def build_segmenter(recipe: SegmentationRecipe, *, with_pretrained: bool = True) -> SemanticFPN:
    model, head = recipe.model, recipe.head
    return build_semantic_fpn(model.variant, model.num_classes,
                              pretrained=model.pretrained if with_pretrained else None,
                              frozen_stages=recipe.backbone.frozen_stages,
                              norm_eval=recipe.backbone.norm_eval,
                              drop_path_rate=model.drop_path, fpn_channels=head.fpn_channels,
                              head_channels=head.channels, head_norm=head.norm,
                              dropout=head.dropout)


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
def evaluate_segmenter(model: nn.Module, dataset: ADE20KSegmentation, env: DistEnv, *,
                       num_classes: int, mode: str = "whole", window: int = 512,
                       stride: int = 341, workers: int = 2,
                       amp_dtype: torch.dtype | None = None) -> dict:
    """mIoU / per-class IoU / pixel accuracy at the labels' original resolution; each
    rank scores its own images and the confusion matrices are summed."""
    loader = eval_loader(dataset, 1, workers, env)
    conf = ConfusionMatrix(num_classes, IGNORE_INDEX)
    with evaluation_mode(model) as net:
        try:
            for image, label in tqdm(loader, desc="evaluate", disable=not env.is_main,
                                     dynamic_ncols=True, leave=False):
                image, label = image.to(env.device), label.to(env.device)
                with autocast(env.device, amp_dtype):
                    logits = infer_logits(net, image, mode, window, stride)
                logits = F.interpolate(logits.float(), size=label.shape[-2:],
                                       mode="bilinear", align_corners=False)
                conf.update(logits.argmax(1), label)
        except DataError as err:
            raise clean_worker_error(err) from None
    matrix = conf.matrix if conf.matrix is not None else torch.zeros(
        num_classes, num_classes, dtype=torch.int64, device=env.device)
    conf.matrix = all_reduce_sum(matrix, env)
    return conf.compute()


def summary_line(metrics: dict) -> str:
    return f"mIoU {metrics['mIoU']:.4f}, aAcc {metrics['aAcc']:.4f}, mAcc {metrics['mAcc']:.4f}"


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def train(recipe: SegmentationRecipe, *, data_root: str | Path, out_dir: str | Path,
          train_split: str = "training", val_split: str | None = "validation",
          device: str | None = None, resume: str | Path | None = None,
          max_steps: int | None = None, threads: int | None = None,
          compiled: bool = False) -> dict:
    """Train Semantic FPN on an ADE20K-layout folder; returns (and writes) the report.

    Evaluates and checkpoints every ``run.eval_every_iters`` iterations and at the end
    (``ckpt_step*.pt``, ``best.pt`` by mIoU); writes ``metrics.jsonl``,
    ``metrics.json`` and ``loss.png``.
    """
    recipe.validate()
    root, data, num_classes = Path(data_root), recipe.data, recipe.model.num_classes
    train_set = ADE20KSegmentation(
        root, train_split, num_classes,
        train_transforms(data.crop_size, recipe.scale, data.scale_range, data.hflip,
                         data.photometric))
    val_set = None
    if val_split is not None:
        val_set = ADE20KSegmentation(root, val_split, num_classes, EvalTransform(recipe.scale))

    def build(env: DistEnv, fresh: bool) -> TaskSpec:
        model = build_segmenter(recipe)
        if env.distributed and recipe.head.norm == "bn":
            model.head = nn.SyncBatchNorm.convert_sync_batchnorm(model.head)
        amp_dtype = resolve_amp(recipe.run.amp, env.device)

        def step(net: nn.Module, batch: tuple) -> StepOutput:
            images, labels = (t.to(env.device, non_blocking=True) for t in batch)
            logits = net(images)
            loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
            return StepOutput({"loss": loss}, images.shape[0])

        def run_eval(net: nn.Module) -> dict:
            return evaluate_segmenter(net, val_set, env, num_classes=num_classes,
                                      mode=recipe.eval.mode, window=data.crop_size,
                                      stride=recipe.eval.stride, workers=data.workers,
                                      amp_dtype=amp_dtype)

        return TaskSpec(model, train_set, step, lambda per_epoch, total: lr_schedule(
                            recipe, total), recipe.optim.lr, recipe.optim.weight_decay,
                        metadata={"variant": recipe.model.variant, "num_classes": num_classes},
                        iters=recipe.schedule.iters, collate_fn=default_collate,
                        evaluate=run_eval if val_set is not None else None,
                        score=lambda m: m["mIoU"], eval_every_epochs=0,
                        eval_every_steps=recipe.run.eval_every_iters,
                        header=[task_header(TASK, recipe, len(train_set), env),
                                recipe.describe()],
                        plot_metrics={"mIoU": "mIoU", "pixel accuracy": "aAcc"},
                        plot_title="ADE20K validation")

    return train_task(TASK, recipe, run_settings(recipe, out_dir=out_dir, device=device,
                                                 resume=resume, max_steps=max_steps,
                                                 threads=threads, compiled=compiled), build)


def lr_schedule(recipe: SegmentationRecipe, total_steps: int) -> LrSchedule:
    """mmseg's: linear warmup from ``warmup_ratio`` x lr over ``warmup_iters`` steps,
    multiplied into a polynomial decay ``(1 - t / total_steps) ** poly_power`` to 0."""
    s = recipe.schedule
    return LrSchedule("poly", main_steps=total_steps, power=s.poly_power,
                      warmup_steps=min(s.warmup_iters, total_steps),
                      warmup_start=s.warmup_ratio)


@dataclass(frozen=True)
class LoadedSegmenter:
    """A trained segmenter in eval mode, with what it was trained with."""

    model: SemanticFPN
    recipe: SegmentationRecipe
    metadata: dict  # variant, num_classes
    device: torch.device


def load_segmenter(checkpoint: str | Path, device: torch.device | str = "cpu"
                   ) -> LoadedSegmenter:
    """Rebuild a trained model from its checkpoint (a file, or a run folder: its
    ``best.pt``, else its newest checkpoint)."""
    path = resolve_trained(checkpoint)
    state = load_run_checkpoint(path, TASK)
    recipe = stored_recipe(SegmentationRecipe, state["config"], DEFAULT_RECIPE, "tasks",
                           str(path))
    model = build_segmenter(recipe, with_pretrained=False)
    model.load_state_dict(state["model"])
    device = torch.device(device)
    return LoadedSegmenter(model.to(device).eval(), recipe, dict(state.get("metadata", {})),
                           device)
