"""The optimizer-step loop of one epoch, shared by every trainer.

One *step* is one optimizer update made of ``accum`` micro-batches; the
position inside an epoch is counted in micro-batches (``batch_in_epoch``), so a
checkpoint taken after any step resumes exactly there. Before each
micro-batch every RNG is seeded from ``(seed, epoch, batch_in_epoch, rank)``:
MixUp/CutMix and drop path draw the same numbers after a restart.

The trainer supplies ``step_fn(batch) -> StepOutput``: the forward pass and
the losses of one micro-batch (it runs under autocast); this module does the
rest (backward with gradient scaling, DDP ``no_sync`` during accumulation, the
non-finite guard, clipping, the optimizer and scheduler steps, BatchNorm buffer
broadcast, EMA).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel

from fastvit.run.device import autocast
from fastvit.run.distributed import DistEnv, all_reduce_max, all_reduce_mean, broadcast_buffers
from fastvit.run.seeding import derive_seed, seed_all
from fastvit.run.store import DivergedError


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0
    step: int = 0  # optimizer steps done
    batch_in_epoch: int = 0  # micro-batches of ``epoch`` consumed
    best_score: float = -math.inf


@dataclass
class StepOutput:
    """What ``step_fn`` returns for one micro-batch.

    ``losses["loss"]`` is back-propagated, the other entries are logged;
    ``losses`` is None when the micro-batch had nothing to train on (every image
    unreadable). ``samples`` counts the images used, ``skipped`` names dropped files.
    """

    losses: dict[str, torch.Tensor] | None
    samples: int = 0
    skipped: tuple[str, ...] = ()


StepFn = Callable[[object], StepOutput]


@dataclass
class TrainParts:
    """Everything a training step touches."""

    model: nn.Module  # possibly DDP-wrapped
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    env: DistEnv
    ema: AveragedModel | None = None
    accum: int = 1
    clip_grad: float | None = None
    amp_dtype: torch.dtype | None = None
    seed: int = 0


@dataclass
class StepStats:
    """One optimizer step: mean of each loss over its micro-batches (not yet averaged
    over ranks), the learning rate it used and the samples this rank processed."""

    losses: dict[str, torch.Tensor]
    lr: float
    samples: int


@dataclass
class EpochResult:
    stopped: bool = False  # ``on_step`` asked to stop
    skipped: list[str] = field(default_factory=list)
    mean_loss: float = float("nan")


def train_epoch(parts: TrainParts, batches: Iterable, progress: Progress, step_fn: StepFn, *,
                on_step: Callable[[Progress, StepStats], bool]) -> EpochResult:
    """Consume the rest of this epoch's batches; ``on_step`` returns True to stop early."""
    env, device = parts.env, parts.env.device
    parts.model.train()
    result = EpochResult()
    micro, samples, count = 0, 0, 0
    sums: dict[str, torch.Tensor] = {}
    epoch_loss, steps_here = torch.zeros((), device=device), 0
    nonfinite = torch.zeros((), device=device)
    for batch in batches:
        seed_all(derive_seed(parts.seed, progress.epoch, progress.batch_in_epoch, env.rank))
        progress.batch_in_epoch += 1
        micro += 1
        last_micro = micro == parts.accum
        no_sync = getattr(parts.model, "no_sync", None)
        syncing = last_micro or not env.distributed or no_sync is None
        with contextlib.nullcontext() if syncing else no_sync():
            with autocast(device, parts.amp_dtype):
                out = step_fn(batch)
            result.skipped.extend(out.skipped)
            if out.losses is not None:
                loss = out.losses["loss"]
                nonfinite = torch.maximum(nonfinite, (~torch.isfinite(loss.detach())).float())
                parts.scaler.scale(loss / parts.accum).backward()
                for key, value in out.losses.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
                count += 1
                samples += out.samples
        if not last_micro:
            continue
        lr = _optimizer_step(parts, progress, nonfinite, sums, count)
        progress.step += 1
        steps_here += 1
        means = {k: v / max(count, 1) for k, v in sums.items()}
        if "loss" in means:
            epoch_loss += means["loss"]
        stats = StepStats(means, lr, samples)
        micro, samples, count, sums = 0, 0, 0, {}
        if on_step(progress, stats):
            result.stopped = True
            break
    result.mean_loss = float(all_reduce_mean(epoch_loss / max(steps_here, 1), env))
    return result


def _optimizer_step(parts: TrainParts, progress: Progress, nonfinite: torch.Tensor,
                    sums: dict[str, torch.Tensor], count: int) -> float:
    """Check, clip, step the optimizer and the schedule, sync buffers, update the EMA."""
    if all_reduce_max(nonfinite.clone(), parts.env).item() > 0:
        lost = float(sums.get("loss", torch.tensor(float("nan")))) / max(count, 1)
        raise DivergedError(
            f"non-finite loss ({lost}) at step {progress.step + 1} (epoch "
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
    broadcast_buffers(parts.raw_model, parts.env)  # identical BN statistics on every rank
    if parts.ema is not None:
        parts.ema.update_parameters(parts.raw_model)
    return lr


class LossWindow:
    """Mean of every loss over the steps since the last :meth:`take`, averaged over ranks."""

    def __init__(self, env: DistEnv) -> None:
        self.env = env
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.images = 0
        self.t0 = time.perf_counter()

    def add(self, stats: StepStats) -> None:
        for key, value in stats.losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.images += stats.samples

    def take(self) -> dict[str, float]:
        """Window means (collective under DDP: every rank must call it) and images/s."""
        names = sorted(self.sums)
        means = torch.stack([torch.as_tensor(self.sums[k], dtype=torch.float64)
                             for k in names]) if names else torch.zeros(0)
        means = all_reduce_mean(means.to(self.env.device) / max(self.steps, 1), self.env)
        now = time.perf_counter()
        rate = self.images * self.env.world_size / max(now - self.t0, 1e-9)
        out = {k: float(v) for k, v in zip(names, means.tolist(), strict=True)}
        out["img_per_s"] = rate if math.isfinite(rate) else 0.0
        self.sums, self.steps, self.images, self.t0 = {}, 0, 0, now
        return out
