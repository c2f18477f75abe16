"""``fit(config)``: train a FastViT classifier from a recipe (under torchrun: DDP).

Classification is a task like detection, segmentation and hand mesh: this module
describes it -- data, plan, model, EMA, MixUp/CutMix step, evaluation, the
``best.safetensors`` export, ``summary.json`` -- as a
:class:`~fastvit.run.training.TaskSpec`, and the one run path
(:func:`fastvit.run.training.train_task`) runs it. The recipe and the data are
checked (``ConfigError`` / ``DataError``) before a model is built or a file is
written, and a resumed run is compared with its checkpoint's recipe before
anything is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from fastvit.checkpoints import save_checkpoint as save_weights
from fastvit.data import MixupCutmix, build_eval_loader, split_batch
from fastvit.data.bad_images import SKIPPED_IMAGES_NAME, BadImageLog
from fastvit.errors import ConfigError
from fastvit.evaluate import evaluate_classifier
from fastvit.models import VARIANTS
from fastvit.pipeline import load_model
from fastvit.run.device import resolve_amp
from fastvit.run.distributed import DistEnv
from fastvit.run.loop import StepOutput
from fastvit.run.store import BEST_NAME
from fastvit.run.training import RunSettings, TaskSpec, train_task
from fastvit.train.config import RESUME_FREE_KEYS, TrainConfig, validate
from fastvit.train.data import build_datasets, recorded_with_weights, val_source
from fastvit.train.freeze import freeze_backbone
from fastvit.train.memory_format import to_channels_last
from fastvit.train.plan import header_lines, make_plan

TASK = "classification"
SUMMARY_NAME = "summary.json"
CURVES_NAME = "curves.png"
BEST_WEIGHTS_NAME = "best.safetensors"
_logger = logging.getLogger(__name__)


def build_model(cfg: TrainConfig, num_classes: int, *, load_weights: bool = True) -> nn.Module:
    """The student: recipe drop path, optional initial weights and classifier reset, and
    with ``model.freeze: backbone`` everything but the classifier frozen
    (:func:`fastvit.train.freeze.freeze_backbone`; no drop path)."""
    m = cfg.model
    drop_path = m.drop_path if m.drop_path is not None else VARIANTS[m.variant].recipe_drop_path
    if m.freeze:
        drop_path = 0.0
    kwargs: dict[str, Any] = {"drop_path_rate": drop_path, "drop_rate": m.drop_rate}
    pretrained = m.pretrained if load_weights else None
    loaded = load_model(m.variant, pretrained=pretrained, ema=m.pretrained_ema, fused=False,
                        num_classes=None if pretrained else num_classes, **kwargs)
    model = loaded.model
    if pretrained and model.num_classes != num_classes and not m.reset_classifier:
        raise ConfigError(f"{pretrained} has a {model.num_classes}-class classifier but the data "
                          f"has {num_classes} classes: add --reset-classifier")
    if pretrained and m.reset_classifier:
        model.reset_classifier(num_classes)
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if m.freeze == "backbone":
        model.frozen = freeze_backbone(model)
    return model


def _base_criterion(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy against the (smoothed, possibly mixed) probability targets."""
    return F.cross_entropy(logits.float(), targets.float())


def build_criterion(cfg: TrainConfig, num_classes: int, device: torch.device
                    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``criterion(images, logits, targets)``; the images feed a distillation teacher."""
    if cfg.distill.kind == "none":
        return lambda images, logits, targets: _base_criterion(logits, targets)
    from fastvit.train.distill import DistillationLoss, build_teacher

    teacher = build_teacher(cfg.distill.teacher, cfg.distill.teacher_weights, num_classes,
                            device)
    if cfg.run.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return DistillationLoss(_base_criterion, teacher, cfg.distill.kind, cfg.distill.alpha,
                            cfg.distill.temperature)


def fit(cfg: TrainConfig, *, resume: str | None = None,
        datasets: tuple[Any, Any, list[str]] | None = None,
        log: Callable[[str], None] | None = None, compiled: bool = False,
        log_to: tuple[str, ...] = ("tensorboard",)) -> dict[str, Any]:
    """Train according to ``cfg`` and return a summary dict (also ``summary.json``).

    ``resume`` is a checkpoint path or ``"auto"`` (the newest readable one in
    ``run.out_dir``; a fresh start when there is none). ``datasets`` replaces
    ``data.path`` with ready ``(train, val, classes)`` datasets (tests, notebooks).
    Progress goes to ``log`` (default: the ``fastvit.train.trainer`` logger at INFO).
    ``compiled`` runs the training forward/backward through ``torch.compile``
    (:mod:`fastvit.run.compiling`). ``log_to`` names where metrics go besides
    ``metrics.jsonl`` (tensorboard, mlflow, wandb: :mod:`fastvit.run.tracking`).
    SIGTERM/SIGINT/SIGUSR1 end the run after the current step with a checkpoint and
    :class:`fastvit.errors.StoppedBySignal`.
    """
    validate(cfg)
    # data first: bad folders fail before anything is built or written
    train_ds, val_ds, classes = datasets if datasets is not None else build_datasets(cfg)
    if cfg.model.num_classes is not None and cfg.model.num_classes != len(classes):
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data has "
                          f"{len(classes)} classes")
    r = cfg.run
    settings = RunSettings(r.out_dir, cfg.data.batch_size, seed=r.seed, workers=cfg.data.workers,
                           amp=r.amp, clip_grad=cfg.optim.clip_grad,
                           deterministic=r.deterministic, device=r.device, threads=r.threads,
                           resume=resume, resume_free_keys=RESUME_FREE_KEYS,
                           max_steps=r.max_steps, save_every_steps=r.save_every_steps,
                           log_every=r.log_every, keep_last=r.keep_last,
                           show_progress=r.progress, compiled=compiled, log_to=tuple(log_to))
    val_text = val_source(cfg) if datasets is None else "given"

    def build(env: DistEnv, fresh: bool) -> TaskSpec:
        return _classification_spec(cfg, env, train_ds, val_ds, classes, val_text, fresh=fresh)

    return train_task(TASK, cfg, settings, build, log=log or _logger.info)


def _classification_spec(cfg: TrainConfig, env: DistEnv, train_ds: Any, val_ds: Any,
                         classes: list[str], val_text: str, *, fresh: bool) -> TaskSpec:
    """The model (initial weights only for a ``fresh`` run), EMA, step, evaluation and
    outputs of a classification run."""
    # shards: every rank gets an equal share, the remainder waits (no padding)
    plan_len = len(train_ds) // env.world_size * env.world_size if isinstance(
        train_ds, IterableDataset) else len(train_ds)
    plan = make_plan(cfg, env, plan_len)
    out_dir, device = Path(cfg.run.out_dir), env.device
    model = build_model(cfg, len(classes), load_weights=fresh).to(device)
    if cfg.run.channels_last:
        model = to_channels_last(model, device)
    ema = None
    if cfg.ema.enabled:
        from fastvit.train.ema import build_ema

        ema = build_ema(model, cfg.ema.decay)
    bad_images = BadImageLog(out_dir / SKIPPED_IMAGES_NAME if env.is_main else None)
    recorded = recorded_with_weights(cfg)  # preprocessing and held-out split, for evaluate
    d = cfg.data
    val_loader = build_eval_loader(val_ds, d.eval_batch_size or 2 * d.batch_size, plan.workers,
                                   distributed=env.distributed,
                                   pin_memory=device.type == "cuda")
    amp_dtype = resolve_amp(cfg.run.amp, device)

    def run_eval(net: nn.Module) -> dict[str, Any]:
        kwargs = dict(device=device, amp_dtype=amp_dtype, channels_last=cfg.run.channels_last)
        raw = evaluate_classifier(net, val_loader, **kwargs)
        skipped = raw.get("skipped", [])
        if env.is_main:
            bad_images.add(skipped)
        metrics = {"model": {**_numeric(raw), "skipped": len(skipped)}}
        if ema is not None:
            metrics["ema"] = _numeric(evaluate_classifier(ema.module, val_loader, **kwargs))
        return metrics

    metadata = {"variant": cfg.model.variant, "class_names": list(classes),
                "num_classes": len(classes), "train_images": len(train_ds),
                "val_images": len(val_ds), "global_batch": plan.global_batch, **recorded}
    o, lr_schedule = cfg.optim, plan.lr_schedule(cfg.schedule.warmup_lr, cfg.schedule.min_lr)
    return TaskSpec(
        model, train_ds, _step_function(cfg, len(classes), bad_images, device),
        lambda per_epoch, total: lr_schedule, plan.lr, o.weight_decay, metadata,
        epochs=plan.total_epochs, adam_betas=tuple(o.betas), adam_eps=o.eps,
        decay_layer_scale=o.decay_layer_scale, accum=plan.accum, ema=ema,
        channels_last=cfg.run.channels_last, bad_images=bad_images, evaluate=run_eval,
        score=lambda m: (m.get("ema") or m["model"])["top1"], describe=_describe,
        on_best=lambda state: _export_best(state, out_dir, cfg, classes, recorded),
        eval_every_epochs=cfg.run.eval_every,
        header=header_lines(cfg, plan, classes=len(classes), train_images=len(train_ds),
                            val_images=len(val_ds), val_source=val_text,
                            frozen=getattr(model, "frozen", None)),
        plot_metrics={"model top-1": "model.top1", "EMA top-1": "ema.top1"},
        plot_title="held-out top-1 (%)", curves_name=CURVES_NAME,
        report=lambda base: _summary(base, out_dir, len(train_ds)), report_name=SUMMARY_NAME,
        artifacts=[BEST_WEIGHTS_NAME, SUMMARY_NAME])


def _step_function(cfg: TrainConfig, num_classes: int, bad_images: BadImageLog,
                   device: torch.device) -> Callable[[nn.Module, Any], StepOutput]:
    """One micro-batch: drop unreadable images, MixUp/CutMix, forward, loss."""
    d = cfg.data
    mixing = MixupCutmix(num_classes, d.mixup, d.cutmix, d.mix_prob, d.switch_prob,
                         d.label_smoothing)
    criterion = build_criterion(cfg, num_classes, device)

    def step(model: nn.Module, batch: Any) -> StepOutput:
        images, targets, skipped = split_batch(batch)
        bad_images.add(skipped, write=False)  # one line per file, the first time
        if images is None:
            return StepOutput(None, 0, skipped)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        images, targets = mixing(images, targets)
        if cfg.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = criterion(images, model(images), targets)
        return StepOutput({"loss": loss}, images.shape[0], skipped)

    return step


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _describe(metrics: dict[str, Any]) -> str:
    text = f"val top-1 {metrics['model']['top1']:.2f}"
    if "ema" in metrics:
        text += f", EMA top-1 {metrics['ema']['top1']:.2f}"
    if metrics["model"].get("skipped"):
        text += f" ({metrics['model']['skipped']} unreadable val image(s) skipped)"
    return text


def _export_best(state: dict[str, Any], out_dir: Path, cfg: TrainConfig,
                 classes: list[str], recorded: dict[str, Any]) -> None:
    """``best.safetensors``: the selected weights alone, for evaluate/export/predict."""
    which = "ema" if "ema" in state else "model"
    top1 = (state["metrics"] or {}).get(which, {}).get("top1")
    save_weights(state[which], out_dir / BEST_WEIGHTS_NAME, variant=cfg.model.variant,
                 class_names=classes, metadata={"weights": which, "epoch": state["epoch"],
                                                "step": state["step"], "top1": top1,
                                                **recorded})


def _summary(report: dict[str, Any], out_dir: Path, train_images: int) -> dict[str, Any]:
    """``summary.json``: where the run ended, its best top-1, its files, its history."""
    best, weights = out_dir / BEST_NAME, out_dir / BEST_WEIGHTS_NAME
    return {"stopped": report["stopped"], "epoch": report["epoch"], "step": report["step"],
            "train_images": train_images, "best_top1": report["best_score"],
            "last_eval": report["last_eval"], "checkpoint": report["checkpoint"],
            "best_checkpoint": str(best) if best.is_file() else None,
            "best_weights": str(weights) if weights.is_file() else None,
            "history": [{"epoch": r["epoch"], "step": r["step"], "top1": r["model"]["top1"],
                         "ema_top1": (r.get("ema") or {}).get("top1")}
                        for r in report["eval"]],
            "curves": report["curves"]}
