"""``train_task``: one training run of a dense task on the shared run layer.

Detection, segmentation and hand mesh differ in their model, data, loss,
schedule and metrics (a :class:`TaskSpec`); everything else -- torchrun/DDP,
the deterministic resumable data order, AMP, checkpoints (``ckpt_step*.pt``,
``best.pt``), ``--resume auto``, ``--max-steps``, metrics.jsonl and the loss
curves -- is the same as for classification (:mod:`fastvit.run`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import Dataset, default_collate

from fastvit.errors import ConfigError, FastVitError
from fastvit.files import write_json
from fastvit.run.compiling import compile_model
from fastvit.run.compiling import describe as describe_compile
from fastvit.run.device import make_scaler, process_settings, resolve_amp
from fastvit.run.distributed import DistEnv, barrier, cleanup, init_distributed, wrap_ddp
from fastvit.run.fit import Checkpointer, FitPlan, fit, read_resume_state
from fastvit.run.loop import Progress, StepOutput, TrainParts
from fastvit.run.metrics_log import MetricsLogger, plot_curves, read_metrics
from fastvit.run.optim import build_optimizer
from fastvit.run.recipes import to_dict
from fastvit.run.sampling import build_train_loader
from fastvit.run.seeding import seed_all
from fastvit.run.store import clean_stale_temp_files
from fastvit.tasks.shared import clean_worker_error

Metrics = dict[str, Any]
_log = logging.getLogger(__name__)


@dataclass
class TaskSpec:
    """What one task brings to a run (built by the task once the device is known).

    ``losses(model, batch)`` returns named losses with ``"loss"`` the one that is
    back-propagated; ``schedule(optimizer, steps_per_epoch, total_steps)`` the
    per-step LR schedule; ``evaluate(model)`` the metrics of the current weights
    (or None for no evaluation) and ``score(metrics)`` what ``best.pt`` maximises.
    """

    model: nn.Module
    train_set: Dataset
    losses: Callable[[nn.Module, Any], dict[str, torch.Tensor]]
    schedule: Callable[[torch.optim.Optimizer, int, int], LRScheduler]
    metadata: dict[str, Any]
    collate_fn: Callable | None = None
    evaluate: Callable[[nn.Module], Metrics] | None = None
    score: Callable[[Metrics], float] | None = None
    epochs: int | None = None  # the length of the run: epochs ...
    iters: int | None = None  # ... or optimizer steps
    eval_every_epochs: int = 1
    eval_every_steps: int = 0
    plot_metrics: dict[str, str] = field(default_factory=dict)
    plot_title: str = "evaluation"
    header: list[str] = field(default_factory=list)  # task lines of the run's header


def train_task(task: str, recipe: Any, build: Callable[[DistEnv], TaskSpec], *,
               out_dir: str | Path, device: str | None = None,
               resume: str | Path | None = None, max_steps: int | None = None,
               threads: int | None = None, log: Callable[[str], None] | None = None,
               compiled: bool = False) -> dict:
    """Train ``task`` with ``recipe`` (its dataclass: ``seed``, ``batch_size``, ``workers``,
    ``lr``, ``weight_decay``, ``clip_grad``, ``amp``, ``log_every``, ``keep_last``,
    ``deterministic``); returns the report also written to ``OUT/metrics.json``.
    ``compiled`` runs the training forward pass through ``torch.compile``.
    SIGTERM/SIGINT/SIGUSR1 end the run after the current step with a checkpoint and
    :class:`fastvit.errors.StoppedBySignal`."""
    recipe.validate()
    env = init_distributed(device)
    try:
        with process_settings(env.device, threads=threads, deterministic=recipe.deterministic):
            return _train(task, recipe, build, env, Path(out_dir), resume, max_steps,
                          (log or _log.info) if env.is_main else (lambda _msg: None), compiled)
    except FastVitError as err:
        raise clean_worker_error(err) from None
    finally:
        cleanup()


def _train(task: str, recipe: Any, build: Callable[[DistEnv], TaskSpec], env: DistEnv,
           out_dir: Path, resume: str | Path | None, max_steps: int | None,
           say: Callable[[str], None], compiled: bool = False) -> dict:
    config = to_dict(recipe)
    state, resume_path = read_resume_state(resume, out_dir, task, config, env.world_size,
                                           warn=say)
    seed_all(recipe.seed)
    spec = build(env)
    model = spec.model.to(env.device)
    amp_dtype = resolve_amp(recipe.amp, env.device)
    loader = build_train_loader(spec.train_set, batch_size=recipe.batch_size,
                                workers=recipe.workers, seed=recipe.seed, rank=env.rank,
                                world_size=env.world_size,
                                collate_fn=spec.collate_fn or default_collate,
                                pin_memory=env.device.type == "cuda")
    steps_per_epoch = loader.sampler.usable_batches
    if steps_per_epoch == 0:
        raise ConfigError(f"the training set has {len(spec.train_set)} samples, fewer than one "
                          f"batch ({recipe.batch_size} x {env.world_size} processes)")
    total = spec.iters if spec.iters is not None else spec.epochs * steps_per_epoch
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("the model has no trainable parameters")
    optimizer = build_optimizer(model, lr=recipe.lr, weight_decay=recipe.weight_decay)
    ddp_model = wrap_ddp(model, env)
    if compiled:
        ddp_model = compile_model(ddp_model, env.device)
    parts = TrainParts(ddp_model, model, optimizer,
                       spec.schedule(optimizer, steps_per_epoch, total),
                       make_scaler(env.device, amp_dtype), env, clip_grad=recipe.clip_grad,
                       amp_dtype=amp_dtype, seed=recipe.seed)
    progress = Progress()
    checkpointer = Checkpointer(parts, progress, out_dir, task=task, config=config,
                                metadata=spec.metadata, keep_last=recipe.keep_last)
    if state is not None:
        checkpointer.restore(state)
        say(f"resumed {resume_path}: step {progress.step} of {total}")
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(out_dir)
    say(f"fastvit {task} train: {getattr(recipe, 'model', '?')}, {len(spec.train_set)} training "
        f"samples, {env.world_size} process(es) x batch {recipe.batch_size}, lr {recipe.lr:g}, "
        f"{total} steps ({steps_per_epoch} per epoch), device {env.device} "
        f"({torch.get_num_threads()} CPU threads), amp {amp_dtype}, "
        f"{describe_compile(compiled, env.device)}")
    for line in spec.header:
        say(line)

    def step_fn(batch: Any) -> StepOutput:
        losses = spec.losses(ddp_model, batch)
        return StepOutput(losses, recipe.batch_size)

    plan = FitPlan(total, steps_per_epoch, max_steps=max_steps,
                   eval_every_epochs=spec.eval_every_epochs,
                   eval_every_steps=spec.eval_every_steps, log_every=recipe.log_every)
    evaluate = (lambda: spec.evaluate(model)) if spec.evaluate is not None else None
    logger = MetricsLogger(out_dir, enabled=env.is_main)
    try:
        result = fit(parts, loader, progress, step_fn, plan, checkpointer, logger,
                     evaluate=evaluate, score=spec.score, say=say)
    finally:
        logger.close()
    records = read_metrics(logger.path) if env.is_main else []
    report = {"task": task, "recipe": config, "steps_per_epoch": steps_per_epoch,
              "total_steps": total, "world_size": env.world_size, "stopped": result.stopped,
              "step": progress.step, "epoch": progress.epoch,
              "best_score": progress.best_score if math.isfinite(progress.best_score) else None,
              "train": [r for r in records if r.get("kind") == "train"],
              "eval": [r for r in records if r.get("kind") == "eval"],
              "last_eval": result.last_eval,
              "checkpoint": str(result.checkpoint) if result.checkpoint else None}
    if env.is_main:
        write_json(out_dir / "metrics.json", report)
        plot_curves(logger.path, out_dir / "loss.png", spec.plot_metrics, spec.plot_title)
    barrier(env)
    return report


def load_task_recipe(cls: type, default: str, config: str | Path | None = None,
                     values: dict[str, Any] | None = None,
                     overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The packaged ``default`` recipe (or ``config``: a packaged name or a YAML path),
    then ``values`` set by plain flags (None: not given), then ``--set`` overrides."""
    from fastvit.run.recipes import apply_overrides, load_recipe

    given = {k: v for k, v in (values or {}).items() if v is not None}
    recipe = load_recipe(cls, config or default, "tasks", given)
    return apply_overrides(recipe, overrides)
