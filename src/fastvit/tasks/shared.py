"""Small pieces the three dense tasks share (the run itself is :mod:`fastvit.tasks.training`).

Loaders of variable-sized samples, sharded evaluation, warm-up schedules,
readable errors from DataLoader workers, and image files in and out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, LRScheduler
from torch.utils.data import DataLoader, Dataset

from fastvit.data.loaders import ShardedEvalSampler, SignalSafeLoader
from fastvit.errors import DataError, FastVitError
from fastvit.files import atomic_path
from fastvit.run.distributed import DistEnv


def list_collate(batch: list) -> tuple:
    """Keep variable-sized samples as tuples (images of different sizes, target dicts)."""
    return tuple(zip(*batch, strict=True))


def eval_loader(dataset: Dataset, batch_size: int, workers: int, env: DistEnv, *,
                collate_fn: Callable | None = None) -> DataLoader:
    """Each rank evaluates a disjoint strided slice; nothing is duplicated, so summed or
    gathered metrics count every sample exactly once."""
    sampler = ShardedEvalSampler(dataset, env.world_size, env.rank)
    return SignalSafeLoader(dataset, batch_size=batch_size, sampler=sampler,
                            num_workers=workers, collate_fn=collate_fn,
                            pin_memory=env.device.type == "cuda")


def clean_worker_error(err: FastVitError) -> FastVitError:
    """A ``FastVitError`` raised in a DataLoader worker comes back with the worker's
    traceback in its message; recover the one-line original message."""
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return type(err)(last[len(prefix):] if last.startswith(prefix) else last)


def with_warmup(optimizer: torch.optim.Optimizer, main: LRScheduler, warmup_iters: int,
                warmup_ratio: float) -> LRScheduler:
    """Linear warm-up from ``warmup_ratio * lr`` over ``warmup_iters`` iterations,
    multiplied into ``main`` (both step once per iteration)."""
    if warmup_iters <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=warmup_ratio, end_factor=1.0,
                      total_iters=warmup_iters)
    return ChainedScheduler([warmup, main], optimizer)


def read_rgb(path: str | os.PathLike) -> Any:
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
