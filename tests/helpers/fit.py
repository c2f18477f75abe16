"""A tiny in-process run of the shared epoch loop (``fastvit.run.epochs``), built the way
the run path builds it: a two-layer MLP with dropout on noisy synthetic features, so a
run takes well under a second and every random component (data order, per-sample
noise, dropout) is exercised."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import default_collate

from fastvit.run.distributed import DistEnv, wrap_ddp
from fastvit.run.epochs import (
    Checkpointer,
    EpochsResult,
    RunCadence,
    read_resume_state,
    run_epochs,
)
from fastvit.run.loop import Progress, StepOutput, TrainParts
from fastvit.run.metrics_log import MetricsLogger
from fastvit.run.sampling import build_train_loader
from fastvit.run.seeding import seed_all

TASK = "tiny"


class NoisyPoints(torch.utils.data.Dataset):
    """``n`` fixed points of 3 classes; each read adds fresh noise (the RNG matters)."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(1)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 8, generator=g) + self.y.view(-1, 1).float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i] + 0.1 * torch.randn(8), int(self.y[i])


@dataclass
class TinyRun:
    """Settings of one invocation; ``hook(progress)`` runs inside every micro-batch
    (``progress.step`` = optimizer steps completed before it)."""

    out_dir: Path
    epochs: int = 2
    samples: int = 24
    batch_size: int = 4
    save_every: int = 0
    keep_last: int = 10
    max_steps: int | None = None
    resume: str | None = None
    evaluate: bool = True
    hook: Callable[[Progress], None] | None = None
    eval_hook: Callable[[Progress], None] | None = None
    on_best: Callable[[dict], None] | None = None


def run_tiny(run: TinyRun, say: Callable[[str], None] = lambda _msg: None,
             env: DistEnv | None = None) -> EpochsResult:
    """One invocation (``env``: this rank of an initialized gloo group, else one process)."""
    env = env or DistEnv()
    config = {"epochs": run.epochs, "samples": run.samples, "batch_size": run.batch_size}
    state, _ = read_resume_state(run.resume, run.out_dir, TASK, config, env.world_size,
                                 warn=say)
    seed_all(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    dataset = NoisyPoints(run.samples)
    loader = build_train_loader(dataset, batch_size=run.batch_size, workers=0, seed=0,
                                rank=env.rank, world_size=env.world_size,
                                collate_fn=default_collate)
    per_epoch = loader.sampler.usable_batches
    total = per_epoch * run.epochs
    scheduler = LambdaLR(optimizer, lambda t: 1.0 - t / (total + 1))
    parts = TrainParts(wrap_ddp(model, env), model, optimizer, scheduler,
                       torch.amp.GradScaler("cpu", enabled=False), env, seed=0)
    progress = Progress()
    checkpointer = Checkpointer(parts, progress, run.out_dir, task=TASK, config=config,
                                metadata={}, keep_last=run.keep_last, on_best=run.on_best)
    if state is not None:
        checkpointer.restore(state)

    def step_fn(batch: Any) -> StepOutput:
        if run.hook is not None:
            run.hook(progress)
        x, y = batch
        loss = nn.functional.cross_entropy(parts.model(x), y)
        return StepOutput({"loss": loss}, len(y))

    def evaluate() -> dict[str, float]:
        if run.eval_hook is not None:
            run.eval_hook(progress)
        model.eval()
        with torch.no_grad():
            loss = nn.functional.cross_entropy(model(dataset.x), dataset.y)
        return {"loss": float(loss)}

    plan = RunCadence(total, per_epoch, max_steps=run.max_steps,
                      save_every_steps=run.save_every, log_every=1)
    logger = MetricsLogger(run.out_dir, enabled=env.is_main, tensorboard=False)
    try:
        return run_epochs(parts, loader, progress, step_fn, plan, checkpointer, logger,
                          evaluate=evaluate if run.evaluate else None,
                          score=lambda m: -m["loss"], say=say, show_progress=False)
    finally:
        logger.close()


def signal_at(step: int, *signals: int) -> Callable[[Progress], None]:
    """A hook sending ``signals`` to this process once, during the micro-batch of
    optimizer step ``step`` (when ``step - 1`` steps are done)."""
    sent: list[bool] = []

    def hook(progress: Progress) -> None:
        if progress.step == step - 1 and not sent:
            sent.append(True)
            for sig in signals:
                os.kill(os.getpid(), sig)

    return hook


def ddp_rank(rank: int, store_file: str, out_dir: str, signal_rank: int, step: int,
             results: Any) -> None:
    """One rank of a 2-process gloo run in which only ``signal_rank`` gets SIGTERM during
    step ``step``; puts ``(rank, outcome)`` on ``results``."""
    import torch.distributed as dist

    from fastvit.errors import StoppedBySignal

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank,
                            world_size=2)
    hook = signal_at(step, signal.SIGTERM) if rank == signal_rank else None
    try:
        run_tiny(TinyRun(Path(out_dir), samples=48, hook=hook), env=DistEnv(rank, 2))
        results.put((rank, "finished"))
    except StoppedBySignal as stop:
        results.put((rank, f"stopped {stop.signal_name} at {stop.step}"))
    finally:
        dist.destroy_process_group()
