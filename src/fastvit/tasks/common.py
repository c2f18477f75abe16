"""Training plumbing shared by the dense-task commands (detect, segment, hand).

One place for: torchrun/DDP set-up and AdamW groups (both reused from
:mod:`fastvit.train`), data loaders that shard across ranks, warm-up + main LR schedules built from
``torch.optim.lr_scheduler``, the AMP training loop with tqdm progress,
crash-safe checkpoints that load with ``weights_only=True``, recipe files and
JSON/PNG reports. Each task only supplies its model, data and loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, LRScheduler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from fastvit.errors import CheckpointError, ConfigError, DataError, FastVitError
from fastvit.io import atomic_path, atomic_torch_save, atomic_write_text
from fastvit.train.distributed import DistEnv, cleanup, gather_objects, init_distributed
from fastvit.train.distributed import barrier as barrier  # re-exported for the engines
from fastvit.train.optim import build_optimizer

R = TypeVar("R")

# ---------------------------------------------------------------------------
# Distributed runtime: fastvit.train.distributed (torchrun env, NCCL/gloo)
# ---------------------------------------------------------------------------

Runtime = DistEnv


def init_runtime(device: str | None = None) -> DistEnv:
    """Pick the device and, under torchrun, join the process group."""
    return init_distributed(device or "auto")


def shutdown(runtime: DistEnv) -> None:
    if runtime.distributed:
        cleanup()


def all_reduce_sum(tensor: torch.Tensor, runtime: DistEnv) -> torch.Tensor:
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_lists(items: list, runtime: DistEnv) -> list:
    """Concatenate the per-rank lists (rank order), on every rank."""
    return [x for part in gather_objects(items, runtime) for x in part]


def wrap_ddp(model: nn.Module, runtime: DistEnv) -> nn.Module:
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------
# Data loading
# ---------------------------------------------------------------------------


def train_loader(dataset: Dataset, batch_size: int, workers: int, runtime: DistEnv, *,
                 collate_fn: Callable | None = None, seed: int = 0) -> DataLoader:
    """Shuffled loader; under DDP each rank draws its own part of every epoch."""
    if len(dataset) < batch_size * runtime.world_size:
        raise ConfigError(f"the training set has {len(dataset)} samples, fewer than one batch "
                          f"({batch_size} x {runtime.world_size} processes)")
    if runtime.distributed:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, drop_last=True,
                      pin_memory=runtime.device.type == "cuda", persistent_workers=workers > 0)


def eval_loader(dataset: Dataset, batch_size: int, workers: int, runtime: DistEnv, *,
                collate_fn: Callable | None = None) -> DataLoader:
    """Each rank evaluates a disjoint slice; unlike DistributedSampler nothing is
    duplicated, so summed or gathered metrics count every sample exactly once."""
    shard = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=runtime.device.type == "cuda")


def list_collate(batch: list) -> tuple:
    """Keep variable-sized samples as tuples (images of different sizes, target dicts)."""
    return tuple(zip(*batch, strict=True))


def clean_worker_error(err: FastVitError) -> FastVitError:
    """A ``FastVitError`` raised in a DataLoader worker comes back with the worker's
    traceback in its message; recover the one-line original message."""
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return type(err)(last[len(prefix):] if last.startswith(prefix) else last)


def iterate_forever(loader: DataLoader, start_epoch: int = 0) -> Iterator[Any]:
    """Endless stream of batches, reshuffling every epoch (DDP-aware)."""
    epoch = start_epoch
    while True:
        sampler = loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        try:
            yield from loader
        except FastVitError as err:
            raise clean_worker_error(err) from None
        epoch += 1


# ---------------------------------------------------------------------------
# Optimizer and schedules
# ---------------------------------------------------------------------------


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, no decay on biases, norms and layer scales
    (the classification trainer's grouping, :func:`fastvit.train.optim.build_optimizer`)."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("the model has no trainable parameters")
    return build_optimizer(model, lr=lr, weight_decay=weight_decay)


def with_warmup(optimizer: torch.optim.Optimizer, main: LRScheduler, warmup_iters: int,
                warmup_ratio: float) -> LRScheduler:
    """Linear warm-up from ``warmup_ratio * lr`` over ``warmup_iters`` iterations,
    multiplied into ``main`` (both step once per iteration)."""
    if warmup_iters <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=warmup_ratio, end_factor=1.0,
                      total_iters=warmup_iters)
    return ChainedScheduler([warmup, main], optimizer)


# ---------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------


def autocast(device: torch.device, enabled: bool):
    """fp16 autocast on CUDA, bf16 on CPU; a no-op when disabled."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def make_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")


def _optimizer_step(model: nn.Module, batch: Any,
                    step_fn: Callable[[Any], dict[str, torch.Tensor]],
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    device: torch.device, amp: bool, clip_grad: float | None,
                    step: int) -> dict[str, torch.Tensor]:
    with autocast(device, amp):
        losses = step_fn(batch)
    loss = losses["loss"]
    if not torch.isfinite(loss):
        raise FastVitError(f"training diverged: loss is {loss.item()} at step {step}; "
                           f"lower the learning rate or enable gradient clipping")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return losses


def fit(model: nn.Module, batches: Iterator[Any], step_fn: Callable[[Any], dict[str, torch.Tensor]],
        *, optimizer: torch.optim.Optimizer, scheduler: LRScheduler | None,
        scaler: torch.amp.GradScaler, runtime: DistEnv, total_steps: int, start_step: int = 0,
        amp: bool = False, clip_grad: float | None = None, log_every: int = 20,
        on_step_end: Callable[[int], None] | None = None, desc: str = "train") -> list[dict]:
    """Run optimizer steps ``start_step + 1 .. total_steps``.

    ``step_fn(batch)`` returns named losses including ``"loss"`` (the one that is
    back-propagated). Returns the log: every ``log_every`` steps the window mean of
    each loss (averaged over ranks) and the learning rate. ``on_step_end(step)`` runs
    after every step, e.g. for periodic evaluation and checkpoints.
    """
    history: list[dict] = []
    window: dict[str, float] = {}
    count = 0
    model.train()
    with tqdm(total=total_steps, initial=start_step, desc=desc, disable=not runtime.is_main,
              dynamic_ncols=True) as bar:
        for step in range(start_step + 1, total_steps + 1):
            losses = _optimizer_step(model, next(batches), step_fn, optimizer, scaler,
                                     runtime.device, amp, clip_grad, step)
            if scheduler is not None:
                scheduler.step()
            for key, value in losses.items():
                window[key] = window.get(key, 0.0) + float(value.detach())
            count += 1
            bar.update(1)
            if step % log_every == 0 or step == total_steps:
                names = sorted(window)
                means = torch.tensor([window[k] / count for k in names], dtype=torch.float64,
                                     device=runtime.device)
                means = all_reduce_sum(means, runtime) / runtime.world_size
                record = {"step": step, "lr": optimizer.param_groups[0]["lr"],
                          **{k: float(v) for k, v in zip(names, means.tolist(), strict=True)}}
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                window, count = {}, 0
            if on_step_end is not None:
                on_step_end(step)
    return history


# ---------------------------------------------------------------------------
# Checkpoints and reports
# ---------------------------------------------------------------------------


def save_task_checkpoint(path: str | os.PathLike, *, task: str, model: nn.Module,
                         recipe: dict, extra: dict | None = None,
                         optimizer: torch.optim.Optimizer | None = None,
                         scheduler: LRScheduler | None = None,
                         scaler: torch.amp.GradScaler | None = None, step: int = 0) -> Path:
    """Write model + training state atomically; only tensors and plain containers, so
    :func:`load_task_checkpoint` can use ``weights_only=True``."""
    state = {"task": task, "recipe": recipe, "step": step, "extra": extra or {},
             "model": unwrap(model).state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return atomic_torch_save(state, path)


def load_task_checkpoint(path: str | os.PathLike, task: str) -> dict:
    """Read a checkpoint written by :func:`save_task_checkpoint` for ``task``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable/unsafe file is a user error
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(state, dict) or "model" not in state or "recipe" not in state:
        raise CheckpointError(f"{path} is not a fastvit {task} checkpoint")
    if state.get("task") != task:
        raise CheckpointError(f"{path} is a {state.get('task')!r} checkpoint, "
                              f"not a {task!r} one")
    return state


def restore_training_state(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: LRScheduler | None, scaler: torch.amp.GradScaler) -> int:
    """Load everything a resumed run needs; returns the step to continue from."""
    try:
        unwrap(model).load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"the checkpoint does not fit this model (another variant or "
                              f"class count?): {first}") from None
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return int(state.get("step", 0))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic, human-readable JSON (NaN written as null)."""
    def fix(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [fix(v) for v in x]
        return x

    text = json.dumps(fix(obj), indent=2, default=_json_default)
    return atomic_write_text(path, text + "\n")


def plot_history(history: Sequence[dict], path: str | os.PathLike, title: str) -> Path | None:
    """Loss (and learning-rate) curves as a PNG; None when there is nothing to plot."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted(k for k in history[0] if k not in ("step", "lr")):
        ax_loss.plot(steps, [h[key] for h in history], label=key,
                     linewidth=2.0 if key == "loss" else 1.0)
    ax_loss.set(xlabel="iteration", ylabel="loss", title=title)
    ax_loss.legend(fontsize=7)
    ax_lr.plot(steps, [h["lr"] for h in history])
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="schedule")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------
# Recipe files
# ---------------------------------------------------------------------------


def load_recipe(cls: type[R], path: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None) -> R:
    """Build the recipe dataclass ``cls`` from its defaults, then the YAML file,
    then non-None ``overrides`` (command-line options); unknown keys are errors."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse recipe {path}: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"recipe {path} must be a mapping of option: value")
        values.update(data)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"unknown recipe option(s){where}: {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(names))}")
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid recipe{' ' + str(path) if path else ''}: {err}") from None


def recipe_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as plain YAML/JSON-friendly values (stored in checkpoints)."""
    items = dataclasses.asdict(recipe).items()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def check_positive(recipe: Any, names: Iterable[str]) -> None:
    for name in names:
        value = getattr(recipe, name)
        if value is None or value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set key=value`` options (values parsed as YAML: ``64``, ``true``, ``[8, 11]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {value!r}") from None
    return out


# ---------------------------------------------------------------------------
# Images in and out (predict commands)
# ---------------------------------------------------------------------------


def read_rgb(path: str | os.PathLike):
    """Open an image as RGB PIL image, or raise a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def save_png(image: torch.Tensor | Any, path: str | os.PathLike) -> Path:
    """Atomically write a uint8 CHW tensor (or a PIL image) as PNG."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        image = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def add_runtime_arguments(parser: Any, *, amp: bool = True) -> None:
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--workers", type=int, default=None, help="data loading processes")
    if amp:
        parser.add_argument("--amp", action="store_true", default=None,
                            help="mixed precision (fp16 on CUDA, bf16 on CPU)")
