"""``run_epochs``: epochs of :func:`~fastvit.run.loop.train_epoch` with evaluation,
checkpoints, logging and early stops.

:func:`fastvit.run.training.train_task` builds the data, model, optimizer and
schedule, wraps them in :class:`~fastvit.run.loop.TrainParts` and a
:class:`Checkpointer`, and calls :func:`run_epochs` with the task's ``step_fn`` and
``evaluate``. Everything here is the same for every task: when to evaluate and
save (:class:`RunCadence`), ``best.pt`` bookkeeping, stopping at ``max_steps`` (resumable), stopping
on SIGTERM/SIGINT/SIGUSR1 with a checkpoint (:mod:`fastvit.run.preemption`),
the progress bar and ``metrics.jsonl``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from fastvit.data.bad_images import BadImageLog
from fastvit.errors import CheckpointError, ConfigError, FastVitError, StoppedBySignal
from fastvit.run import store
from fastvit.run.distributed import DistEnv, broadcast_object, gather_objects
from fastvit.run.loop import LossWindow, Progress, StepFn, StepStats, TrainParts, train_epoch
from fastvit.run.metrics_log import MetricsLogger, progress_bar
from fastvit.run.preemption import StopSignals
from fastvit.run.seeding import capture_rng, restore_rng

Metrics = dict[str, Any]


@dataclass
class RunCadence:
    """When a run evaluates, saves, logs and stops, in optimizer steps and epochs."""

    total_steps: int
    steps_per_epoch: int
    max_steps: int | None = None  # stop this invocation after that step (resumable)
    save_every_steps: int = 0  # 0: checkpoints at epoch ends (and evaluations) only
    eval_every_epochs: int = 1  # 0: no per-epoch evaluation
    eval_every_steps: int = 0  # step-based evaluation (iteration schedules); 0: off
    log_every: int = 50

    @property
    def total_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


@dataclass
class EpochsResult:
    progress: Progress
    stopped: bool  # ended before ``total_steps`` (max_steps); resumable
    last_eval: Metrics = field(default_factory=dict)
    checkpoint: Path | None = None


class Checkpointer:
    """Builds the run checkpoint (collective: every rank calls :meth:`save`), rank 0 writes.

    ``metadata`` is what a reader of the file needs (variant, class names...);
    ``on_best(state)`` runs on rank 0 after a new best checkpoint is written.
    """

    def __init__(self, parts: TrainParts, progress: Progress, out_dir: str | Path, *,
                 task: str, config: dict[str, Any], metadata: dict[str, Any],
                 keep_last: int = 3,
                 on_best: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.parts, self.progress, self.out_dir = parts, progress, Path(out_dir)
        self.task, self.config, self.metadata = task, config, metadata
        self.keep_last, self.on_best = keep_last, on_best
        self.last_saved_step: int | None = None
        self.last_path: Path | None = None

    @property
    def env(self) -> DistEnv:
        return self.parts.env

    def state(self, metrics: Metrics | None = None) -> dict[str, Any]:
        p, prog = self.parts, self.progress
        state = {
            "format": store.RUN_FORMAT, "task": self.task,
            "model": p.raw_model.state_dict(), "optimizer": p.optimizer.state_dict(),
            "scheduler": p.scheduler.state_dict(), "scaler": p.scaler.state_dict(),
            "step": prog.step, "epoch": prog.epoch, "batch_in_epoch": prog.batch_in_epoch,
            "best_score": prog.best_score, "rng": gather_objects(capture_rng(), self.env),
            "config": self.config, "metrics": metrics, "world_size": self.env.world_size,
            "metadata": self.metadata,
        }
        if p.ema is not None:
            state["ema"] = p.ema.module.state_dict()
            state["ema_n_averaged"] = p.ema.n_averaged.detach().cpu()
        return state

    def save(self, metrics: Metrics | None = None, best: bool = False) -> None:
        """Write the checkpoint of this step (and ``best.pt``); collective.

        ``best.pt`` goes first: if the periodic file then fails, a resume from the
        previous one re-evaluates and rewrites the same ``best.pt``. A failed write
        raises the same :class:`~fastvit.run.store.CheckpointWriteError` on every rank.
        """
        state = self.state(metrics)
        error: FastVitError | None = None
        if self.env.is_main:
            try:
                if best:
                    store.save_best(state, self.out_dir)
                    if self.on_best is not None:
                        self._export_best(state)
                self.last_path = store.save_checkpoint(state, self.out_dir,
                                                       self.progress.step, self.keep_last)
            except FastVitError as err:
                error = err
        error = broadcast_object(error, self.env)  # also the barrier after the write
        if error is not None:
            raise error
        self.last_saved_step = self.progress.step

    def _export_best(self, state: dict[str, Any]) -> None:
        try:
            self.on_best(state)
        except OSError as err:
            raise store.CheckpointWriteError(f"cannot export the best weights: {err}; "
                                             f"best.pt is written") from None

    def restore(self, state: dict[str, Any]) -> None:
        """Put a checkpoint's training state back into the parts and the progress."""
        p, prog = self.parts, self.progress
        try:
            p.raw_model.load_state_dict(state["model"])
            if p.ema is not None:
                if "ema" not in state:
                    raise CheckpointError("the checkpoint has no EMA weights but this recipe "
                                          "uses EMA")
                p.ema.module.load_state_dict(state["ema"])
                p.ema.n_averaged.copy_(state["ema_n_averaged"])
            p.optimizer.load_state_dict(state["optimizer"])
            p.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                p.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"checkpoint state does not fit this run: "
                                  f"{str(err).strip().splitlines()[0]}") from None
        prog.epoch, prog.step = int(state["epoch"]), int(state["step"])
        prog.batch_in_epoch = int(state["batch_in_epoch"])
        prog.best_score = float(state.get("best_score", -math.inf))
        rng = state.get("rng")
        if isinstance(rng, list) and len(rng) == self.env.world_size:
            restore_rng(rng[self.env.rank])


def run_epochs(parts: TrainParts, loader: DataLoader, progress: Progress, step_fn: StepFn,
               plan: RunCadence, checkpointer: Checkpointer, logger: MetricsLogger, *,
               evaluate: Callable[[], Metrics] | None = None,
               score: Callable[[Metrics], float] | None = None,
               describe: Callable[[Metrics], str] | None = None,
               say: Callable[[str], None] = print, show_progress: bool = True,
               bad_images: BadImageLog | None = None) -> EpochsResult:
    """Train until ``plan.total_steps`` (or ``plan.max_steps``), evaluating and saving.

    ``evaluate()`` returns the metrics of the current weights (collective under
    DDP); ``score(metrics)`` is what ``best.pt`` maximises; ``describe(metrics)``
    is the end-of-epoch line. Unreadable training images are counted per epoch and,
    with ``bad_images``, listed in its file (rank 0). ``loader.sampler`` is a
    :class:`~fastvit.run.sampling.ResumableEpochSampler`. Evaluation runs every
    ``plan.eval_every_steps`` steps when that is set, else every
    ``plan.eval_every_epochs`` epochs, and always at the end.

    SIGTERM, SIGINT or SIGUSR1 end the run after the current optimizer step with a
    checkpoint and :class:`~fastvit.errors.StoppedBySignal`. The end of an epoch
    (its evaluation) is then left to the resumed run, which does it first.
    """
    with StopSignals(parts.env) as signals:
        run = _Run(parts, progress, plan, checkpointer, logger, evaluate, score, say, signals)
        usable = loader.sampler.usable_batches
        while progress.step < plan.total_steps or progress.batch_in_epoch >= usable:
            run.stop_if_signalled()  # e.g. received during an epoch-end evaluation
            epoch = progress.epoch
            loader.sampler.set_epoch(epoch, progress.batch_in_epoch)
            run.bar = progress_bar(loader, total=usable, initial=progress.batch_in_epoch,
                                   desc=f"epoch {epoch + 1}/{plan.total_epochs}",
                                   enabled=parts.env.is_main and show_progress)
            result = train_epoch(parts, run.bar, progress, step_fn, on_step=run.on_step)
            _report_skipped(result.skipped, epoch, parts.env, bad_images, say)
            if run.signal is not None:
                run.stop_for_signal()
            if progress.batch_in_epoch >= usable:
                run.end_epoch(result.mean_loss, describe or _describe)
            if result.stopped and progress.step < plan.total_steps:
                run.save_if_needed()
                say(f"stopped at step {progress.step} of {plan.total_steps} (--max-steps); "
                    f"continue with --resume auto")
                return EpochsResult(progress, True, run.last_eval, checkpointer.last_path)
        if run.evaluated_at != progress.step and evaluate is not None:
            run.evaluate_and_save()
        run.save_if_needed()
    return EpochsResult(progress, False, run.last_eval, checkpointer.last_path)


def _report_skipped(skipped: list[str], epoch: int, env: DistEnv,
                    bad_images: BadImageLog | None, say: Callable[[str], None]) -> None:
    """The epoch's unreadable images, from every rank: a count, and the list on file."""
    paths = [p for part in gather_objects(skipped, env) for p in part]
    if not paths:
        return
    listed = ""
    if bad_images is not None and bad_images.path is not None:
        bad_images.add(paths, quiet=True)
        listed = f" (all of them: {bad_images.path})"
    say(f"warning: skipped {len(paths)} unreadable image(s) in epoch {epoch + 1}{listed}")


class _Run:
    """What :func:`run_epochs` does at each step and epoch end: log, evaluate, save."""

    def __init__(self, parts: TrainParts, progress: Progress, plan: RunCadence,
                 checkpointer: Checkpointer, logger: MetricsLogger,
                 evaluate: Callable[[], Metrics] | None,
                 score: Callable[[Metrics], float] | None, say: Callable[[str], None],
                 signals: StopSignals) -> None:
        self.parts, self.progress, self.plan = parts, progress, plan
        self.checkpointer, self.logger, self.say = checkpointer, logger, say
        self.evaluate, self.score, self.signals = evaluate, score, signals
        self.signal: str | None = None  # the stop signal all ranks agreed on
        self.window = LossWindow(parts.env)
        self.last_eval: Metrics = {}
        self.evaluated_at: int | None = None
        self.bar = None

    def evaluate_and_save(self) -> None:
        prog = self.progress
        self.last_eval = self.evaluate() if self.evaluate is not None else {}
        self.evaluated_at = prog.step
        self.parts.raw_model.train()
        best = False
        if self.score is not None and self.last_eval:
            value = self.score(self.last_eval)
            best = value > prog.best_score
            prog.best_score = max(prog.best_score, value)
        self.logger.log({"kind": "eval", "step": prog.step, "epoch": prog.epoch,
                         **self.last_eval})
        self.checkpointer.save(metrics=self.last_eval, best=best)

    def save_if_needed(self) -> None:
        if self.checkpointer.last_saved_step != self.progress.step:
            self.checkpointer.save()

    def stop_if_signalled(self) -> None:
        self.signal = self.signals.agreed()
        if self.signal is not None:
            self.stop_for_signal()

    def stop_for_signal(self) -> None:
        """Checkpoint this step (unless already saved) and end the run."""
        self.save_if_needed()
        step = self.progress.step
        path = self.checkpointer.out_dir / store.checkpoint_name(step)
        raise StoppedBySignal(self.signal, step, str(path))

    def on_step(self, prog: Progress, stats: StepStats) -> bool:
        """After every optimizer step; True stops the epoch (end of run or max_steps)."""
        plan = self.plan
        self.window.add(stats)
        if prog.step % plan.log_every == 0 or prog.step == 1:
            record = self.window.take()
            self.logger.log({"kind": "train", "step": prog.step, "epoch": prog.epoch,
                             "lr": stats.lr, **record})
            if hasattr(self.bar, "set_postfix"):
                self.bar.set_postfix(loss=f"{record.get('loss', math.nan):.4f}",
                                     lr=f"{stats.lr:.2e}", img_s=f"{record['img_per_s']:.0f}")
        if plan.eval_every_steps and (prog.step % plan.eval_every_steps == 0
                                      or prog.step == plan.total_steps):
            self.evaluate_and_save()
        elif plan.save_every_steps and prog.step % plan.save_every_steps == 0:
            self.checkpointer.save()
        self.signal = self.signals.agreed()
        return self.signal is not None or prog.step >= plan.total_steps or (
            plan.max_steps is not None and prog.step >= plan.max_steps)

    def end_epoch(self, mean_loss: float, describe: Callable[[Metrics], str]) -> None:
        """The epoch is complete: count it, evaluate when due, checkpoint, report."""
        prog, plan = self.progress, self.plan
        prog.epoch += 1
        prog.batch_in_epoch = 0
        due = not plan.eval_every_steps and plan.eval_every_epochs and (
            prog.epoch % plan.eval_every_epochs == 0 or prog.step >= plan.total_steps)
        if due:
            self.evaluate_and_save()
        else:
            self.save_if_needed()
        line = (f"epoch {prog.epoch}/{plan.total_epochs} (step {prog.step}): train loss "
                f"{mean_loss:.4f}")
        if due and self.last_eval:
            line += ", " + describe(self.last_eval)
        self.say(line)


def _describe(metrics: Metrics) -> str:
    shown = {k: v for k, v in _flat(metrics).items() if isinstance(v, float | int)}
    return ", ".join(f"{k} {v:.4g}" for k, v in list(shown.items())[:6])


def _flat(metrics: Metrics, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key} "))
        elif key not in ("count", "skipped"):
            out[f"{prefix}{key}"] = value
    return out


def read_resume_state(resume: str | Path | None, out_dir: str | Path, task: str,
                      config: dict[str, Any], world_size: int,
                      free_keys: frozenset[str] = frozenset(),
                      warn: Callable[[str], None] = print) -> tuple[dict | None, Path | None]:
    """The checkpoint to resume, checked against this run's recipe and process count
    before anything is loaded.

    ``auto``: the newest readable checkpoint in ``out_dir`` (none: a fresh start);
    unreadable ones are skipped with a ``warn`` naming them (see
    :func:`fastvit.run.store.load_resumable`).
    """
    from fastvit.run.recipes import recipe_differences, require_sections

    if not resume:
        return None, None
    candidates = store.resume_candidates(resume, out_dir)
    if not candidates:
        return None, None
    state, path = store.load_resumable(candidates, task, warn)
    if config and all(isinstance(v, dict) for v in config.values()):
        require_sections(state["config"], f"cannot resume {path}")
    diffs = recipe_differences(state["config"], config, free_keys)
    if diffs:
        raise ConfigError(f"cannot resume {path}: it was trained with another recipe; "
                          f"differing keys:\n  " + "\n  ".join(diffs))
    if state.get("world_size", 1) != world_size and state["batch_in_epoch"] > 0:
        raise ConfigError(f"{path} was written mid-epoch by {state['world_size']} "
                          f"process(es); resume it with the same number of processes")
    return state, path
