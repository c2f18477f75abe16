"""``fit(config)``: build data, model, optimizer, EMA and run epochs with evaluation.

Order matters for the user: recipe and data are checked (``ConfigError`` /
``DataError``) before a model is built or a file is written, and a resumed run
is compared with its checkpoint's recipe before anything is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvit.errors import CheckpointError, ConfigError
from fastvit.io import atomic_write_text
from fastvit.train import checkpointing as ckpt
from fastvit.train.config import TrainConfig, resume_mismatches, to_dict, validate
from fastvit.train.data import build_datasets, build_train_loader, seed_all
from fastvit.train.distributed import (
    DistEnv,
    all_reduce_mean,
    barrier,
    cleanup,
    gather_objects,
    init_distributed,
)
from fastvit.train.engine import Progress, StepParts, Throughput, train_one_epoch
from fastvit.train.logging import (
    CURVES_NAME,
    MetricsLogger,
    plot_curves,
    progress,
    read_metrics,
)
from fastvit.train.memory_format import to_channels_last
from fastvit.train.optim import build_optimizer, build_scheduler, scaled_lr

SUMMARY_NAME = "summary.json"
BEST_WEIGHTS_NAME = "best.safetensors"
CHECKPOINT_FORMAT = "fastvit-train-v1"


@dataclass
class Plan:
    """Sizes derived from the recipe, the data and the number of processes."""

    world_size: int
    per_device_batch: int
    accum: int
    global_batch: int
    steps_per_epoch: int
    total_epochs: int
    lr: float

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 (or fp16 without bf16 support) on CUDA, full precision on CPU."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 autocast needs a CUDA device; use --amp bf16 on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def make_plan(cfg: TrainConfig, env: DistEnv, train_len: int) -> Plan:
    world_batch = cfg.data.batch_size * env.world_size
    global_batch = cfg.optim.global_batch or world_batch
    if global_batch % world_batch:
        raise ConfigError(f"optim.global_batch={global_batch} is not a multiple of "
                          f"batch_size x processes = {cfg.data.batch_size} x {env.world_size}; "
                          f"gradient accumulation needs a whole number of micro-batches")
    accum = global_batch // world_batch
    per_rank = -(-train_len // env.world_size)
    steps = per_rank // cfg.data.batch_size // accum
    if steps == 0:
        raise ConfigError(f"the training split has {train_len} images: fewer than one global "
                          f"batch of {global_batch}; lower --batch-size or optim.global_batch")
    lr = scaled_lr(cfg.optim.lr, global_batch, cfg.optim.lr_base_batch)
    return Plan(env.world_size, cfg.data.batch_size, accum, global_batch, steps,
                cfg.schedule.epochs + cfg.schedule.cooldown_epochs, lr)


def build_model(cfg: TrainConfig, num_classes: int, *, load_weights: bool = True) -> nn.Module:
    """The student: recipe drop path, optional fine-tuning weights and classifier reset."""
    from fastvit.model import VARIANTS, create_model

    m = cfg.model
    drop_path = m.drop_path if m.drop_path is not None else VARIANTS[m.variant].recipe_drop_path
    kwargs: dict[str, Any] = {"drop_path_rate": drop_path, "drop_rate": m.drop_rate}
    if not (m.checkpoint and load_weights):
        model = create_model(m.variant, num_classes=num_classes, **kwargs)
    else:
        from fastvit.checkpoint import read_checkpoint
        from fastvit.checkpoint_layouts import fused_state, num_classes_of

        state, _ = read_checkpoint(m.checkpoint, use_ema=m.checkpoint_ema)
        if fused_state(state) is not False:
            raise CheckpointError(f"{m.checkpoint} holds reparameterized (fused) weights, which "
                                  f"cannot be trained; fine-tune from the train-time checkpoint")
        file_classes = num_classes_of(state) or num_classes
        if file_classes != num_classes and not m.reset_classifier:
            raise ConfigError(f"{m.checkpoint} has a {file_classes}-class classifier but the data "
                              f"has {num_classes} classes: add --reset-classifier")
        model = create_model(m.variant, num_classes=file_classes, checkpoint=state, **kwargs)
        if m.reset_classifier:
            model.reset_classifier(num_classes)
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def _base_criterion(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy against the (smoothed, possibly mixed) probability targets."""
    return F.cross_entropy(logits.float(), targets.float())


def build_criterion(cfg: TrainConfig, num_classes: int, device: torch.device
                    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    if cfg.distill.kind == "none":
        return lambda images, logits, targets: _base_criterion(logits, targets)
    from fastvit.train.distill import DistillationLoss, build_teacher

    teacher = build_teacher(cfg.distill.teacher, cfg.distill.teacher_weights, num_classes,
                            device)
    if cfg.run.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    loss = DistillationLoss(_base_criterion, teacher, cfg.distill.kind, cfg.distill.alpha,
                            cfg.distill.temperature)
    return lambda images, logits, targets: loss(images, logits, targets)


def _numeric(metrics: dict[str, Any] | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def fit(cfg: TrainConfig, *, resume: str | None = None,
        datasets: tuple[Any, Any, list[str]] | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train according to ``cfg`` (under torchrun: DDP) and return a summary dict.

    ``resume`` is a checkpoint path or ``"auto"`` (the newest in ``run.out_dir``;
    a fresh start when there is none). ``datasets`` replaces ``data.path`` with
    ready ``(train, val, classes)`` datasets (tests, notebooks).
    """
    validate(cfg)
    env = init_distributed(cfg.run.device)
    # process-wide switches the run may flip; restored so an in-process caller is unaffected
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.get_num_threads())
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    try:
        return _fit(cfg, env, resume, datasets, log or print)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.set_num_threads(saved[3])
        cleanup()


def _fit(cfg: TrainConfig, env: DistEnv, resume: str | None,
         datasets: tuple[Any, Any, list[str]] | None,
         log: Callable[[str], None]) -> dict[str, Any]:
    say = log if env.is_main else (lambda _msg: None)
    out_dir = Path(cfg.run.out_dir)
    device = env.device
    amp_dtype = resolve_amp(cfg.run.amp, device)
    if cfg.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn if a CUDA op has none
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # -- data first: bad folders fail before anything is built or written --------------------
    train_ds, val_ds, classes = datasets if datasets is not None else build_datasets(cfg)
    num_classes = len(classes)
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data has "
                          f"{num_classes} classes")
    plan = make_plan(cfg, env, len(train_ds))
    config_dict = to_dict(cfg)

    # -- resume: check compatibility before touching the model --------------------------------
    state = None
    resume_path = ckpt.resolve_resume(resume, out_dir) if resume else None
    if resume_path is not None:
        state = ckpt.load_training_checkpoint(resume_path)
        diffs = resume_mismatches(state["config"], config_dict)
        if diffs:
            raise ConfigError(f"cannot resume {resume_path}: it was trained with another "
                              f"recipe; differing keys:\n  " + "\n  ".join(diffs))
        if state.get("world_size", 1) != env.world_size and state["batch_in_epoch"] > 0:
            raise ConfigError(f"{resume_path} was written mid-epoch by {state['world_size']} "
                              f"process(es); resume it with the same number of processes")
    elif resume and resume != "auto":
        raise CheckpointError(f"--resume: nothing to resume at {resume}")

    # -- model, optimizer, schedule, EMA ------------------------------------------------------
    seed_all(cfg.run.seed)
    model = build_model(cfg, num_classes, load_weights=state is None).to(device)
    if cfg.run.channels_last:
        model = to_channels_last(model, device)
    optimizer = build_optimizer(model, lr=plan.lr, weight_decay=cfg.optim.weight_decay,
                                betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                decay_layer_scale=cfg.optim.decay_layer_scale)
    warmup_steps = round(cfg.schedule.warmup_epochs * plan.steps_per_epoch)
    scheduler = build_scheduler(optimizer, base_lr=plan.lr, warmup_lr=cfg.schedule.warmup_lr,
                                min_lr=cfg.schedule.min_lr, warmup_steps=warmup_steps,
                                cosine_steps=cfg.schedule.epochs * plan.steps_per_epoch
                                - warmup_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = None
    if cfg.ema.enabled:
        from fastvit.train.ema import build_ema

        ema = build_ema(model, cfg.ema.decay)
    progress_state = Progress()
    if state is not None:
        _restore(state, model, ema, optimizer, scheduler, scaler, progress_state, env)
        say(f"resumed {resume_path}: epoch {progress_state.epoch}, step {progress_state.step}, "
            f"batch {progress_state.batch_in_epoch} of the epoch")
    ddp_model: nn.Module = model
    if env.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False)  # the engine broadcasts buffers after each step
    criterion = build_criterion(cfg, num_classes, device)
    from fastvit.data import MixupCutmix, build_eval_loader

    d = cfg.data
    mixing = MixupCutmix(num_classes, d.mixup, d.cutmix, d.mix_prob, d.switch_prob,
                         d.label_smoothing)
    pin = device.type == "cuda"
    train_loader = build_train_loader(train_ds, batch_size=d.batch_size, workers=d.workers,
                                      seed=cfg.run.seed, rank=env.rank,
                                      world_size=env.world_size, batch_multiple=plan.accum,
                                      pin_memory=pin)
    val_loader = build_eval_loader(val_ds, d.eval_batch_size or 2 * d.batch_size, d.workers,
                                   distributed=env.distributed, pin_memory=pin)
    parts = StepParts(ddp_model, model, optimizer, scheduler, scaler, criterion, mixing, ema,
                      env, plan.accum, cfg.optim.clip_grad, amp_dtype, cfg.run.channels_last,
                      cfg.run.seed)

    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.clean_stale_temp_files(out_dir)
        atomic_write_text(out_dir / "config.yaml", _yaml(config_dict))
    logger = MetricsLogger(out_dir, enabled=env.is_main)
    say(f"fastvit train: {cfg.model.variant}, {num_classes} classes, {len(train_ds)} train / "
        f"{len(val_ds)} val images, {plan.world_size} process(es) x batch "
        f"{plan.per_device_batch} x accum {plan.accum} = global batch {plan.global_batch}, "
        f"lr {plan.lr:.3g}, {plan.total_epochs} epochs x {plan.steps_per_epoch} steps, "
        f"device {device} ({torch.get_num_threads()} CPU threads), amp {amp_dtype}")
    meta = {"variant": cfg.model.variant, "classes": list(classes), "num_classes": num_classes,
            "train_images": len(train_ds), "val_images": len(val_ds),
            "world_size": env.world_size, "global_batch": plan.global_batch}
    saver = _Saver(cfg, env, out_dir, config_dict, meta, parts, progress_state)
    try:
        return _epochs(cfg, env, plan, parts, progress_state, train_loader, val_loader, logger,
                       saver, amp_dtype, say)
    finally:
        logger.close()


def _epochs(cfg: TrainConfig, env: DistEnv, plan: Plan, parts: StepParts, prog: Progress,
            train_loader, val_loader, logger: MetricsLogger, saver: _Saver,
            amp_dtype: torch.dtype | None, say: Callable[[str], None]) -> dict[str, Any]:
    from fastvit.evaluate import evaluate

    speed = Throughput()
    last_eval: dict[str, Any] = {}
    bar_holder: dict[str, Any] = {}

    def on_step(p: Progress, stats: dict) -> bool:
        speed.add(stats["images"] * env.world_size)
        if p.step % cfg.run.log_every == 0 or p.step == 1:
            loss = float(all_reduce_mean(stats["loss"].clone(), env))
            rate = speed.rate()
            logger.log({"kind": "train", "step": p.step, "epoch": p.epoch, "loss": loss,
                        "lr": stats["lr"], "img_per_s": rate})
            bar = bar_holder.get("bar")
            if bar is not None and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{stats['lr']:.2e}",
                                img_s=f"{rate:.0f}")
        if cfg.run.save_every_steps and p.step % cfg.run.save_every_steps == 0:
            saver.save()
        if cfg.run.stop_at_step is not None and p.step >= cfg.run.stop_at_step:
            if saver.last_saved_step != p.step:
                saver.save()
            return True
        return False

    while prog.epoch < plan.total_epochs:
        epoch = prog.epoch
        train_loader.sampler.set_epoch(epoch, prog.batch_in_epoch)

        def bar(loader, epoch=epoch, start=prog.batch_in_epoch):
            b = progress(loader, total=train_loader.sampler.usable_batches, initial=start,
                         desc=f"epoch {epoch + 1}/{plan.total_epochs}",
                         enabled=env.is_main and cfg.run.progress)
            bar_holder["bar"] = b
            return b

        result = train_one_epoch(parts, train_loader, prog, on_step=on_step, bar=bar)
        skipped = gather_objects(len(result.skipped_images), env)
        if sum(skipped):
            say(f"warning: skipped {sum(skipped)} unreadable image(s) in epoch {epoch + 1}")
        if result.stopped:
            say(f"stopped at step {prog.step} (run.stop_at_step); resume with --resume auto")
            return _finish(cfg, env, saver, logger, prog, last_eval, stopped=True)
        prog.epoch += 1
        prog.batch_in_epoch = 0
        if prog.epoch % cfg.run.eval_every == 0 or prog.epoch == plan.total_epochs:
            last_eval = {"model": _numeric(evaluate(parts.raw_model, val_loader, device=env.device,
                                                    amp_dtype=amp_dtype,
                                                    channels_last=cfg.run.channels_last))}
            if parts.ema is not None:
                last_eval["ema"] = _numeric(evaluate(parts.ema.module, val_loader,
                                                     device=env.device, amp_dtype=amp_dtype,
                                                     channels_last=cfg.run.channels_last))
            parts.raw_model.train()
            score = (last_eval.get("ema") or last_eval["model"])["top1"]
            is_best = score > prog.best_top1
            if is_best:
                prog.best_top1 = score
            logger.log({"kind": "eval", "step": prog.step, "epoch": prog.epoch,
                        "train_loss": result.mean_loss, **last_eval})
            ema_text = f", EMA top-1 {last_eval['ema']['top1']:.2f}" if "ema" in last_eval else ""
            say(f"epoch {prog.epoch}/{plan.total_epochs}: train loss {result.mean_loss:.4f}, "
                f"val top-1 {last_eval['model']['top1']:.2f}{ema_text} (best {prog.best_top1:.2f})")
            saver.save(metrics=last_eval, best=is_best)
        else:
            saver.save()
    return _finish(cfg, env, saver, logger, prog, last_eval, stopped=False)


def _finish(cfg: TrainConfig, env: DistEnv, saver: _Saver, logger: MetricsLogger,
            prog: Progress, last_eval: dict[str, Any], *, stopped: bool) -> dict[str, Any]:
    out_dir = Path(cfg.run.out_dir)
    summary = {"stopped": stopped, "epoch": prog.epoch, "step": prog.step,
               "train_images": saver.meta.get("train_images"),
               "best_top1": prog.best_top1, "last_eval": last_eval,
               "checkpoint": str(saver.last_path) if saver.last_path else None,
               "best_checkpoint": str(out_dir / ckpt.BEST_NAME)
               if (out_dir / ckpt.BEST_NAME).is_file() else None,
               "best_weights": str(out_dir / BEST_WEIGHTS_NAME)
               if (out_dir / BEST_WEIGHTS_NAME).is_file() else None}
    if env.is_main:
        logger.close()
        summary["history"] = [
            {"epoch": r["epoch"], "train_loss": r.get("train_loss"),
             "top1": r["model"]["top1"], "ema_top1": (r.get("ema") or {}).get("top1")}
            for r in read_metrics(logger.path) if r.get("kind") == "eval"]
        png = plot_curves(logger.path, out_dir / CURVES_NAME)
        summary["curves"] = str(png) if png else None
        atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    barrier(env)
    return summary


class _Saver:
    """Builds the checkpoint dict (collective: every rank must call ``save``), rank 0 writes."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, out_dir: Path, config_dict: dict,
                 meta: dict, parts: StepParts, prog: Progress) -> None:
        self.cfg, self.env, self.out_dir = cfg, env, out_dir
        self.config_dict, self.meta, self.parts, self.prog = config_dict, meta, parts, prog
        self.last_saved_step: int | None = None
        self.last_path: Path | None = None

    def state(self, metrics: dict | None = None) -> dict[str, Any]:
        p = self.parts
        rng = gather_objects(ckpt.capture_rng(), self.env)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": p.raw_model.state_dict(),
            "optimizer": p.optimizer.state_dict(),
            "scheduler": p.scheduler.state_dict(),
            "scaler": p.scaler.state_dict(),
            "step": self.prog.step, "epoch": self.prog.epoch,
            "batch_in_epoch": self.prog.batch_in_epoch, "best_top1": self.prog.best_top1,
            "rng": rng, "config": self.config_dict, "metrics": metrics, **self.meta,
            # read by fastvit.checkpoint (validate/predict map class folders by these names)
            "metadata": {"class_names": list(self.meta["classes"]),
                         "variant": self.meta["variant"]},
        }
        if p.ema is not None:
            state["ema"] = p.ema.module.state_dict()
            state["ema_n_averaged"] = p.ema.n_averaged.detach().cpu()
        return state

    def save(self, metrics: dict | None = None, best: bool = False) -> None:
        state = self.state(metrics)
        if self.env.is_main:
            self.last_path = ckpt.save_checkpoint(state, self.out_dir, self.prog.step,
                                                  self.cfg.run.keep_last)
            if best:
                ckpt.save_best(state, self.out_dir)
                self._export_best(state)
        self.last_saved_step = self.prog.step
        barrier(self.env)


    def _export_best(self, state: dict[str, Any]) -> None:
        """``best.safetensors``: the selected weights alone, for validate/export/predict."""
        from fastvit.checkpoint import save_checkpoint as save_weights

        which = "ema" if "ema" in state else "model"
        top1 = (state["metrics"] or {}).get(which, {}).get("top1")
        save_weights(state[which], self.out_dir / BEST_WEIGHTS_NAME,
                     variant=self.meta["variant"], class_names=self.meta["classes"],
                     metadata={"weights": which, "epoch": state["epoch"],
                               "step": state["step"], "top1": top1})


def _restore(state: dict, model: nn.Module, ema, optimizer, scheduler, scaler,
             prog: Progress, env: DistEnv) -> None:
    try:
        model.load_state_dict(state["model"])
        if ema is not None:
            if "ema" not in state:
                raise CheckpointError("the checkpoint has no EMA weights but this recipe uses "
                                      "EMA")
            ema.module.load_state_dict(state["ema"])
            ema.n_averaged.copy_(state["ema_n_averaged"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint state does not fit this run: "
                              f"{str(err).splitlines()[0]}") from None
    prog.epoch, prog.step = int(state["epoch"]), int(state["step"])
    prog.batch_in_epoch = int(state["batch_in_epoch"])
    prog.best_top1 = float(state.get("best_top1", -1.0))
    rng = state.get("rng")
    if isinstance(rng, list) and len(rng) == env.world_size:
        ckpt.restore_rng(rng[env.rank])


def _yaml(config_dict: dict) -> str:
    import yaml

    return yaml.safe_dump(config_dict, sort_keys=False)
