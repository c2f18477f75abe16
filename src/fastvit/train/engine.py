"""The optimizer-step loop of one epoch (accumulation, AMP, clipping, EMA, NaN guard).

One *step* is one optimizer update made of ``accum`` micro-batches; the
position inside an epoch is counted in micro-batches (``batch_in_epoch``), so a
checkpoint taken after any step resumes exactly there. Before each
micro-batch every RNG is seeded from ``(seed, epoch, batch_in_epoch, rank)``:
MixUp/CutMix and drop path draw the same numbers after a restart.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel

from fastvit.data import split_batch
from fastvit.train.checkpointing import DivergedError
from fastvit.train.data import derive_seed, seed_all
from fastvit.train.distributed import (
    DistEnv,
    all_reduce_max,
    all_reduce_mean,
    broadcast_buffers,
)

# criterion(images, logits, targets) -> loss; images are passed for distillation teachers
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0
    step: int = 0  # optimizer steps done
    batch_in_epoch: int = 0  # micro-batches of ``epoch`` consumed
    best_top1: float = -1.0


@dataclass
class StepParts:
    """Everything a training step touches."""

    model: nn.Module  # possibly DDP-wrapped
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    criterion: Criterion
    mixing: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None
    ema: AveragedModel | None
    env: DistEnv
    accum: int = 1
    clip_grad: float | None = None
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    seed: int = 0


@dataclass
class EpochResult:
    stopped: bool = False  # a step callback asked to stop (stop_at_step)
    skipped_images: list[str] = field(default_factory=list)
    mean_loss: float = float("nan")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(parts: StepParts, loader, progress: Progress, *,
                    on_step: Callable[[Progress, dict], bool],
                    bar: Callable | None = None) -> EpochResult:
    """Consume the rest of this epoch's batches; ``on_step`` returns True to stop early.

    ``on_step(progress, stats)`` runs after every optimizer step with ``stats``
    holding this step's ``loss`` (a tensor, not synchronized), ``lr`` and
    ``images`` (processed by this rank).
    """
    env, device = parts.env, parts.env.device
    parts.model.train()
    result = EpochResult()
    micro, images_in_step, loss_sum, loss_count = 0, 0, torch.zeros((), device=device), 0
    step_loss = torch.zeros((), device=device)
    nonfinite = torch.zeros((), device=device)
    iterator = bar(loader) if bar is not None else loader
    steps_here = 0
    for batch in iterator:
        images, targets, skipped = split_batch(batch)
        result.skipped_images.extend(skipped)
        seed_all(derive_seed(parts.seed, progress.epoch, progress.batch_in_epoch, env.rank))
        progress.batch_in_epoch += 1
        micro += 1
        last_micro = micro == parts.accum
        if images is not None:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if parts.mixing is not None:
                images, targets = parts.mixing(images, targets)
            if parts.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            sync = last_micro or not env.distributed
            no_sync = getattr(parts.model, "no_sync", None)
            with (contextlib.nullcontext() if sync or no_sync is None else no_sync()):
                with _autocast(device, parts.amp_dtype):
                    logits = parts.model(images)
                    loss = parts.criterion(images, logits, targets)
                nonfinite = torch.maximum(nonfinite, (~torch.isfinite(loss.detach())).float())
                parts.scaler.scale(loss / parts.accum).backward()
            step_loss += loss.detach().float()
            loss_count += 1
            images_in_step += images.shape[0]
        if not last_micro:
            continue
        # ---- optimizer step -------------------------------------------------
        if all_reduce_max(nonfinite.clone(), env).item() > 0:
            lost = step_loss / max(loss_count, 1)
            raise DivergedError(
                f"non-finite loss ({lost.item()}) at step {progress.step + 1} (epoch "
                f"{progress.epoch + 1}, batch {progress.batch_in_epoch} of the epoch): training "
                f"stopped before the update; checkpoints already written are untouched")
        if parts.clip_grad is not None:
            parts.scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(parts.raw_model.parameters(), parts.clip_grad)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.optimizer.zero_grad(set_to_none=True)
        lr = parts.optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" after
            warnings.simplefilter("ignore", UserWarning)  # a GradScaler-skipped fp16 step
            parts.scheduler.step()
        broadcast_buffers(parts.raw_model, env)  # identical BN statistics on every rank
        if parts.ema is not None:
            parts.ema.update_parameters(parts.raw_model)
        progress.step += 1
        steps_here += 1
        loss_sum += step_loss
        stats = {"loss": step_loss / max(loss_count, 1), "lr": lr, "images": images_in_step}
        micro, images_in_step, loss_count = 0, 0, 0
        step_loss = torch.zeros((), device=device)
        if on_step(progress, stats):
            result.stopped = True
            break
    result.mean_loss = float(all_reduce_mean(loss_sum / max(steps_here, 1), env))
    return result


class Throughput:
    """Images per second over the window since the last ``rate()`` call."""

    def __init__(self) -> None:
        self.t0, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.images / max(now - self.t0, 1e-9)
        self.t0, self.images = now, 0
        return value if math.isfinite(value) else 0.0
