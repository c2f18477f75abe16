"""``train_task``: the one run path of every trainer (classification, detection,
segmentation, hand mesh).

A task differs from another in its model, data, step, schedule and metrics: it
describes them in a :class:`TaskSpec`, built once the process (and so the device)
is known. Everything else happens here, once, for all of them: torchrun/DDP,
``--resume`` (checked against the recipe before anything is loaded), seeding,
``torch.compile``, the optimizer and the per-step lr schedule, checkpoints and
``best.pt``, preemption by signals, the header, ``metrics.jsonl``, the curves and
the report (:class:`RunSettings` says where and how to run).
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
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import Dataset

from fastvit.data.bad_images import BadImageLog
from fastvit.errors import ConfigError, FastVitError
from fastvit.files import atomic_write_text, write_json
from fastvit.openmp_wait import describe as describe_openmp_wait
from fastvit.run.compiling import compile_model
from fastvit.run.compiling import describe as describe_compile
from fastvit.run.device import default_workers, make_scaler, process_settings, resolve_amp
from fastvit.run.distributed import DistEnv, barrier, cleanup, init_distributed, wrap_ddp
from fastvit.run.epochs import Checkpointer, RunCadence, read_resume_state, run_epochs
from fastvit.run.loop import Progress, StepOutput, TrainParts
from fastvit.run.lr_schedule import LrSchedule, lr_scheduler
from fastvit.run.metrics_log import MetricsLogger, plot_curves, read_metrics
from fastvit.run.optim import build_optimizer
from fastvit.run.recipes import dump_yaml, to_dict
from fastvit.run.sampling import ShardTrainLoader, build_train_loader
from fastvit.run.seeding import seed_all
from fastvit.run.store import clean_stale_temp_files
from fastvit.run.worker_errors import clean_worker_error

Metrics = dict[str, Any]
CONFIG_NAME = "config.yaml"
DATA_STREAMS = "data_streams"  # metadata key: the shard streams per process of the run
_log = logging.getLogger(__name__)


@dataclass
class RunSettings:
    """Where and how a run goes, whatever the task (its recipe and the command's flags)."""

    out_dir: str | Path
    batch_size: int  # per process and micro-batch
    seed: int = 0
    workers: int | None = None  # None: one per CPU core of this process
    amp: str | None = "none"
    clip_grad: float | None = None
    deterministic: bool = False
    device: str | None = None
    threads: int | None = None
    resume: str | Path | None = None
    resume_free_keys: frozenset[str] = frozenset()  # recipe keys a resume may change
    max_steps: int | None = None  # stop this invocation after that step (resumable)
    save_every_steps: int = 0
    log_every: int = 50
    keep_last: int = 3
    show_progress: bool = True
    compiled: bool = False
    log_to: tuple[str, ...] = ("tensorboard",)  # and/or mlflow, wandb (fastvit.run.tracking)


@dataclass
class TaskSpec:
    """What one task brings to a run (built by the task once the device is known).

    ``step(model, batch)`` runs one micro-batch through the (DDP/compiled) model and
    returns its losses; ``schedule(steps_per_epoch, total_steps)`` the lr multiplier
    per optimizer step; ``evaluate(model)`` the metrics of the current weights and
    ``score(metrics)`` what ``best.pt`` maximises. ``report(base)`` turns the common
    report into the one the task writes to ``report_name`` and returns.
    """

    model: nn.Module
    train_set: Dataset
    step: Callable[[nn.Module, Any], StepOutput]
    schedule: Callable[[int, int], LrSchedule]
    lr: float
    weight_decay: float
    metadata: dict[str, Any]  # stored with the weights (variant, class names...)
    epochs: int | None = None  # the length of the run: epochs ...
    iters: int | None = None  # ... or optimizer steps
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    decay_layer_scale: bool = False
    accum: int = 1  # micro-batches per optimizer step
    ema: AveragedModel | None = None
    channels_last: bool = False  # only stated in the header: the task converts its model
    collate_fn: Callable | None = None  # None: fastvit.data.collate_skip_bad
    bad_images: BadImageLog | None = None  # where unreadable training images are listed
    evaluate: Callable[[nn.Module], Metrics] | None = None
    score: Callable[[Metrics], float] | None = None
    describe: Callable[[Metrics], str] | None = None  # the end-of-epoch metrics phrase
    on_best: Callable[[dict[str, Any]], None] | None = None  # after a new best.pt (rank 0)
    eval_every_epochs: int = 1
    eval_every_steps: int = 0
    header: list[str] = field(default_factory=list)  # the task's lines of the header
    plot_metrics: dict[str, str] = field(default_factory=dict)
    plot_title: str = "evaluation"
    curves_name: str = "loss.png"
    report: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    report_name: str = "metrics.json"
    artifacts: list[str] = field(default_factory=list)  # OUT files trackers keep at the end


def train_task(task: str, recipe: Any, settings: RunSettings,
               build: Callable[[DistEnv, bool], TaskSpec], *,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``task`` as ``build(env, fresh)`` describes it (``fresh``: not resuming, so
    initial weights are worth loading); returns the report also written to
    ``OUT/<spec.report_name>``. ``recipe`` (a recipe dataclass) is stored in every
    checkpoint and as ``OUT/config.yaml``. SIGTERM/SIGINT/SIGUSR1 end the run after the
    current step with a checkpoint and :class:`fastvit.errors.StoppedBySignal`."""
    env = init_distributed(settings.device)
    say = (log or _log.info) if env.is_main else (lambda _msg: None)
    try:
        with process_settings(env.device, threads=settings.threads,
                              deterministic=settings.deterministic):
            return _train(task, recipe, settings, build, env, say)
    except FastVitError as err:
        raise clean_worker_error(err) from None
    finally:
        cleanup()


def _train(task: str, recipe: Any, settings: RunSettings,
           build: Callable[[DistEnv, bool], TaskSpec], env: DistEnv,
           say: Callable[[str], None]) -> dict[str, Any]:
    out_dir, config, resume = Path(settings.out_dir), to_dict(recipe), settings.resume
    state, resume_path = read_resume_state(resume, out_dir, task, config, env.world_size,
                                           settings.resume_free_keys, warn=say)
    seed_all(settings.seed)
    spec = build(env, state is None)
    model = spec.model.to(env.device)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("the model has no trainable parameters")
    amp_dtype = resolve_amp(settings.amp, env.device)
    workers = settings.workers if settings.workers is not None else default_workers(
        env.world_size)
    streams = (state.get("metadata") or {}).get(DATA_STREAMS) if state is not None else None
    loader = build_train_loader(spec.train_set, batch_size=settings.batch_size, workers=workers,
                                seed=settings.seed, rank=env.rank, world_size=env.world_size,
                                batch_multiple=spec.accum, collate_fn=spec.collate_fn,
                                pin_memory=env.device.type == "cuda", streams=streams)
    data_lines = []
    if isinstance(loader, ShardTrainLoader):  # a resume must cut the epoch the same way
        spec.metadata = {**spec.metadata, DATA_STREAMS: loader.streams}
        workers = loader.streams if loader.streams > 1 else 0
        data_lines.append(loader.describe())
    steps_per_epoch = loader.sampler.usable_batches // spec.accum
    if steps_per_epoch == 0:
        raise ConfigError(f"the training set has {len(spec.train_set)} samples, fewer than one "
                          f"batch ({settings.batch_size} x {env.world_size} processes)")
    total = spec.iters if spec.iters is not None else spec.epochs * steps_per_epoch
    optimizer = build_optimizer(model, lr=spec.lr, weight_decay=spec.weight_decay,
                                betas=spec.adam_betas, eps=spec.adam_eps,
                                decay_layer_scale=spec.decay_layer_scale)
    scheduler = lr_scheduler(optimizer, spec.schedule(steps_per_epoch, total))
    wrapped = wrap_ddp(model, env, broadcast_buffers=False)  # the loop syncs buffers
    if settings.compiled:
        wrapped = compile_model(wrapped, env.device)
    parts = TrainParts(model=wrapped, raw_model=model, optimizer=optimizer, scheduler=scheduler,
                       scaler=make_scaler(env.device, amp_dtype), env=env, ema=spec.ema,
                       accum=spec.accum, clip_grad=settings.clip_grad, amp_dtype=amp_dtype,
                       seed=settings.seed)
    progress = Progress()
    checkpointer = Checkpointer(parts, progress, out_dir, task=task, config=config,
                                metadata=spec.metadata, keep_last=settings.keep_last,
                                on_best=spec.on_best)
    if state is not None:
        checkpointer.restore(state)
        say(f"resumed {resume_path}: epoch {progress.epoch}, step {progress.step} of {total}, "
            f"batch {progress.batch_in_epoch} of the epoch")
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(out_dir)
        atomic_write_text(out_dir / CONFIG_NAME, dump_yaml(recipe))
    amp = str(amp_dtype).replace("torch.", "") if amp_dtype else "none"
    for line in [*spec.header, *data_lines,
                 f"  run: {total} steps ({steps_per_epoch} per epoch), device {env.device} "
                 f"({torch.get_num_threads()} CPU threads, {describe_openmp_wait()}), amp {amp}, "
                 f"{'channels_last' if spec.channels_last else 'contiguous'}, "
                 f"{describe_compile(settings.compiled, env.device)}, {workers} DataLoader "
                 f"worker(s)"]:
        say(line)
    cadence = RunCadence(total, steps_per_epoch, max_steps=settings.max_steps,
                         save_every_steps=settings.save_every_steps,
                         eval_every_epochs=spec.eval_every_epochs,
                         eval_every_steps=spec.eval_every_steps, log_every=settings.log_every)
    evaluate = (lambda: spec.evaluate(model)) if spec.evaluate is not None else None
    logger = MetricsLogger(out_dir, enabled=env.is_main, tensorboard="tensorboard" in
                           settings.log_to, log_to=settings.log_to, params=config)
    try:
        result = run_epochs(parts, loader, progress, lambda batch: spec.step(wrapped, batch),
                            cadence, checkpointer, logger, evaluate=evaluate, score=spec.score,
                            describe=spec.describe, say=say,
                            show_progress=settings.show_progress, bad_images=spec.bad_images)
    except BaseException:
        logger.finish(status="KILLED")
        raise
    logger.close()
    records = read_metrics(logger.path) if env.is_main else []
    curves = (plot_curves(logger.path, out_dir / spec.curves_name, spec.plot_metrics,
                          spec.plot_title) if env.is_main else None)
    report = {"task": task, "recipe": config, "steps_per_epoch": steps_per_epoch,
              "total_steps": total, "world_size": env.world_size, "stopped": result.stopped,
              "step": progress.step, "epoch": progress.epoch,
              "best_score": progress.best_score if math.isfinite(progress.best_score) else None,
              "train": [r for r in records if r.get("kind") == "train"],
              "eval": [r for r in records if r.get("kind") == "eval"],
              "last_eval": result.last_eval,
              "checkpoint": str(result.checkpoint) if result.checkpoint else None,
              "curves": str(curves) if curves else None}
    if spec.report is not None:
        report = spec.report(report)
    if env.is_main:
        write_json(out_dir / spec.report_name, report)
    logger.finish([curves, *(out_dir / name for name in spec.artifacts)])
    barrier(env)
    return report
