"""Small pieces the three dense tasks share (the run itself is :mod:`fastvit.run.training`).

Loaders of variable-sized samples, sharded evaluation, the run settings a task
recipe gives, and image files in and out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fastvit.data.loaders import ShardedEvalSampler, SignalSafeLoader
from fastvit.errors import DataError
from fastvit.files import atomic_path
from fastvit.run.distributed import DistEnv
from fastvit.run.training import RunSettings


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


def run_settings(recipe: Any, *, out_dir: str | Path, device: str | None,
                 resume: str | Path | None, max_steps: int | None, threads: int | None,
                 compiled: bool) -> RunSettings:
    """The :class:`~fastvit.run.training.RunSettings` of a dense-task recipe (its
    ``data.batch_size``, ``data.workers``, ``optim.clip_grad`` and ``run`` section:
    ``seed``, ``amp``, ``deterministic``, ``log_every``, ``keep_last``) and the
    command's flags."""
    data, run = recipe.data, recipe.run
    return RunSettings(out_dir, data.batch_size, seed=run.seed, workers=data.workers,
                       amp=run.amp, clip_grad=recipe.optim.clip_grad,
                       deterministic=run.deterministic, device=device, threads=threads,
                       resume=resume, max_steps=max_steps, log_every=run.log_every,
                       keep_last=run.keep_last, compiled=compiled)


def task_header(task: str, recipe: Any, samples: int, env: DistEnv, unit: str = "images"
                ) -> str:
    """The first header line of a dense-task run, worded the same by all three tasks."""
    return (f"fastvit {task} train: {recipe.model.variant}, {samples} training {unit}, "
            f"{env.world_size} process(es) x batch {recipe.data.batch_size}, "
            f"lr {recipe.optim.lr:g}")


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
