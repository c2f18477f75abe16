"""``fit(config)``: train a FastViT classifier from a recipe (under torchrun: DDP).

Reads top to bottom like torchvision's reference script: data, plan, resume
check, model, optimizer and schedule, EMA, loaders, then the shared epoch loop
(:func:`fastvit.run.fit.fit`) with this task's step and evaluation. The recipe
and the data are checked (``ConfigError`` / ``DataError``) before a model is
built or a file is written, and a resumed run is compared with its
checkpoint's recipe before anything is loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvit.checkpoints import save_checkpoint as save_weights
from fastvit.data import MixupCutmix, build_eval_loader, split_batch
from fastvit.data.bad_images import SKIPPED_IMAGES_NAME, BadImageLog
from fastvit.errors import CheckpointError, ConfigError
from fastvit.evaluate import evaluate_classifier
from fastvit.files import atomic_write_text
from fastvit.models import VARIANTS
from fastvit.pipeline import load_model
from fastvit.run.compiling import compile_model
from fastvit.run.compiling import describe as describe_compile
from fastvit.run.device import make_scaler, process_settings, resolve_amp
from fastvit.run.distributed import DistEnv, barrier, cleanup, init_distributed, wrap_ddp
from fastvit.run.fit import Checkpointer, FitPlan, FitResult, read_resume_state
from fastvit.run.fit import fit as run_fit
from fastvit.run.loop import Progress, StepOutput, TrainParts
from fastvit.run.metrics_log import MetricsLogger, plot_curves, read_metrics
from fastvit.run.optim import build_optimizer, build_scheduler
from fastvit.run.recipes import dump_yaml
from fastvit.run.sampling import build_train_loader
from fastvit.run.seeding import seed_all
from fastvit.run.store import BEST_NAME, clean_stale_temp_files
from fastvit.train.config import RESUME_FREE_KEYS, TrainConfig, to_dict, validate
from fastvit.train.data import build_datasets, recorded_with_weights, val_source
from fastvit.train.memory_format import to_channels_last
from fastvit.train.plan import Plan, header_lines, make_plan

TASK = "classification"
SUMMARY_NAME = "summary.json"
CURVES_NAME = "curves.png"
BEST_WEIGHTS_NAME = "best.safetensors"
_logger = logging.getLogger(__name__)


def build_model(cfg: TrainConfig, num_classes: int, *, load_weights: bool = True) -> nn.Module:
    """The student: recipe drop path, optional initial weights and classifier reset."""
    m = cfg.model
    drop_path = m.drop_path if m.drop_path is not None else VARIANTS[m.variant].recipe_drop_path
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
        log: Callable[[str], None] | None = None, compiled: bool = False) -> dict[str, Any]:
    """Train according to ``cfg`` and return a summary dict.

    ``resume`` is a checkpoint path or ``"auto"`` (the newest readable one in
    ``run.out_dir``; a fresh start when there is none). ``datasets`` replaces
    ``data.path`` with ready ``(train, val, classes)`` datasets (tests, notebooks).
    Progress goes to ``log`` (default: the ``fastvit.train.trainer`` logger at INFO).
    ``compiled`` runs the training forward/backward through ``torch.compile``
    (:mod:`fastvit.run.compiling`). SIGTERM/SIGINT/SIGUSR1 end the run after the
    current step with a checkpoint and :class:`fastvit.errors.StoppedBySignal`.
    """
    validate(cfg)
    env = init_distributed(cfg.run.device)
    try:
        with process_settings(env.device, threads=cfg.run.threads,
                              deterministic=cfg.run.deterministic):
            return _train(cfg, env, resume, datasets, log or _logger.info, compiled)
    finally:
        cleanup()


def _train(cfg: TrainConfig, env: DistEnv, resume: str | None,
           datasets: tuple[Any, Any, list[str]] | None,
           log: Callable[[str], None], compiled: bool = False) -> dict[str, Any]:
    say = log if env.is_main else (lambda _msg: None)
    out_dir, device = Path(cfg.run.out_dir), env.device
    amp_dtype = resolve_amp(cfg.run.amp, device)

    # -- data first: bad folders fail before anything is built or written --------------------
    train_ds, val_ds, classes = datasets if datasets is not None else build_datasets(cfg)
    if cfg.model.num_classes is not None and cfg.model.num_classes != len(classes):
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data has "
                          f"{len(classes)} classes")
    plan = make_plan(cfg, env, len(train_ds))
    bad_images = BadImageLog(out_dir / SKIPPED_IMAGES_NAME if env.is_main else None)
    config = to_dict(cfg)
    state, resume_path = read_resume_state(resume, out_dir, TASK, config, env.world_size,
                                           RESUME_FREE_KEYS, warn=say)
    if state is None and resume and resume != "auto":
        raise CheckpointError(f"--resume: nothing to resume at {resume}")

    # -- model, optimizer, schedule, EMA, checkpoints -----------------------------------------
    parts = _build_parts(cfg, env, plan, len(classes), amp_dtype, fresh=state is None)
    if compiled:
        parts.model = compile_model(parts.model, device)
    progress = Progress()
    recorded = recorded_with_weights(cfg)  # preprocessing and held-out split, for evaluate
    metadata = {"variant": cfg.model.variant, "class_names": list(classes),
                "num_classes": len(classes), "train_images": len(train_ds),
                "val_images": len(val_ds), "global_batch": plan.global_batch,
                **recorded}
    checkpointer = Checkpointer(parts, progress, out_dir, task=TASK, config=config,
                                metadata=metadata, keep_last=cfg.run.keep_last,
                                on_best=lambda s: _export_best(s, out_dir, cfg, classes,
                                                               recorded))
    if state is not None:
        checkpointer.restore(state)
        say(f"resumed {resume_path}: epoch {progress.epoch}, step {progress.step}, "
            f"batch {progress.batch_in_epoch} of the epoch")

    # -- loaders, the per-batch work, evaluation ----------------------------------------------
    d, pin = cfg.data, device.type == "cuda"
    train_loader = build_train_loader(train_ds, batch_size=d.batch_size, workers=plan.workers,
                                      seed=cfg.run.seed, rank=env.rank,
                                      world_size=env.world_size, batch_multiple=plan.accum,
                                      pin_memory=pin)
    val_loader = build_eval_loader(val_ds, d.eval_batch_size or 2 * d.batch_size, plan.workers,
                                   distributed=env.distributed, pin_memory=pin)
    step_fn = _step_function(cfg, parts, len(classes), bad_images)

    def run_eval() -> dict[str, Any]:
        kwargs = dict(device=device, amp_dtype=amp_dtype, channels_last=cfg.run.channels_last)
        raw = evaluate_classifier(parts.raw_model, val_loader, **kwargs)
        skipped = raw.get("skipped", [])
        if env.is_main:
            bad_images.add(skipped)
        metrics = {"model": {**_numeric(raw), "skipped": len(skipped)}}
        if parts.ema is not None:
            metrics["ema"] = _numeric(evaluate_classifier(parts.ema.module, val_loader, **kwargs))
        return metrics

    # -- run ----------------------------------------------------------------------------------
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(out_dir)
        atomic_write_text(out_dir / "config.yaml", dump_yaml(cfg))
    for line in header_lines(cfg, plan, classes=len(classes), train_images=len(train_ds),
                             val_images=len(val_ds),
                             val_source=val_source(cfg) if datasets is None else "given",
                             device=str(device), threads=torch.get_num_threads(),
                             amp=str(amp_dtype).replace("torch.", "") if amp_dtype
                             else "none", compiled=describe_compile(compiled, device)):
        say(line)
    fit_plan = FitPlan(plan.total_steps, plan.steps_per_epoch, max_steps=cfg.run.max_steps,
                       save_every_steps=cfg.run.save_every_steps,
                       eval_every_epochs=cfg.run.eval_every, log_every=cfg.run.log_every)
    logger = MetricsLogger(out_dir, enabled=env.is_main)
    try:
        result = run_fit(parts, train_loader, progress, step_fn, fit_plan, checkpointer, logger,
                         evaluate=run_eval, score=lambda m: (m.get("ema") or m["model"])["top1"],
                         describe=_describe, say=say, show_progress=cfg.run.progress,
                         bad_images=bad_images)
    finally:
        logger.close()
    return _finish(out_dir, env, result, metadata, logger)


def _build_parts(cfg: TrainConfig, env: DistEnv, plan: Plan, num_classes: int,
                 amp_dtype: torch.dtype | None, *, fresh: bool) -> TrainParts:
    """Model (initial weights only for a fresh run), AdamW, the per-step schedule, EMA, DDP."""
    device = env.device
    seed_all(cfg.run.seed)
    model = build_model(cfg, num_classes, load_weights=fresh).to(device)
    if cfg.run.channels_last:
        model = to_channels_last(model, device)
    optimizer = build_optimizer(model, lr=plan.lr, weight_decay=cfg.optim.weight_decay,
                                betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                decay_layer_scale=cfg.optim.decay_layer_scale)
    scheduler = build_scheduler(optimizer, base_lr=plan.lr, warmup_lr=cfg.schedule.warmup_lr,
                                min_lr=cfg.schedule.min_lr, warmup_steps=plan.warmup_steps,
                                cosine_steps=plan.cosine_steps)
    ema = None
    if cfg.ema.enabled:
        from fastvit.train.ema import build_ema

        ema = build_ema(model, cfg.ema.decay)
    ddp_model = wrap_ddp(model, env, broadcast_buffers=False)  # the loop syncs buffers
    return TrainParts(ddp_model, model, optimizer, scheduler, make_scaler(device, amp_dtype),
                      env, ema, plan.accum, cfg.optim.clip_grad, amp_dtype, cfg.run.seed)


def _step_function(cfg: TrainConfig, parts: TrainParts, num_classes: int,
                   bad_images: BadImageLog) -> Callable[[Any], StepOutput]:
    """One micro-batch: drop unreadable images, MixUp/CutMix, forward, loss."""
    d, device = cfg.data, parts.env.device
    mixing = MixupCutmix(num_classes, d.mixup, d.cutmix, d.mix_prob, d.switch_prob,
                         d.label_smoothing)
    criterion = build_criterion(cfg, num_classes, device)

    def step_fn(batch: Any) -> StepOutput:
        images, targets, skipped = split_batch(batch)
        bad_images.add(skipped, write=False)  # one line per file, the first time
        if images is None:
            return StepOutput(None, 0, skipped)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        images, targets = mixing(images, targets)
        if cfg.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = criterion(images, parts.model(images), targets)
        return StepOutput({"loss": loss}, images.shape[0], skipped)

    return step_fn


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


def _finish(out_dir: Path, env: DistEnv, result: FitResult, metadata: dict[str, Any],
            logger: MetricsLogger) -> dict[str, Any]:
    prog = result.progress
    best = out_dir / BEST_NAME
    summary = {"stopped": result.stopped, "epoch": prog.epoch, "step": prog.step,
               "train_images": metadata["train_images"], "best_top1": prog.best_score,
               "last_eval": result.last_eval,
               "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "best_checkpoint": str(best) if best.is_file() else None,
               "best_weights": str(out_dir / BEST_WEIGHTS_NAME)
               if (out_dir / BEST_WEIGHTS_NAME).is_file() else None}
    if env.is_main:
        summary["history"] = [
            {"epoch": r["epoch"], "step": r["step"], "top1": r["model"]["top1"],
             "ema_top1": (r.get("ema") or {}).get("top1")}
            for r in read_metrics(logger.path) if r.get("kind") == "eval"]
        png = plot_curves(logger.path, out_dir / CURVES_NAME,
                          {"model top-1": "model.top1", "EMA top-1": "ema.top1"},
                          "held-out top-1 (%)")
        summary["curves"] = str(png) if png else None
        atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    barrier(env)
    return summary
