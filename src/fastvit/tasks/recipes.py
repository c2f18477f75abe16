"""The recipe of a dense-task run: its shared sections, and packaged default, ``--config``,
flags, ``--set``.

Every trainer's recipe has the same shape (:data:`fastvit.run.recipes.SHARED_KEYS`):
the keys the four share sit in the classification recipe's sections under its names
(``model.variant``, ``data.batch_size``, ``optim.lr``, ``run.amp``...). The sections
below are those the three dense tasks have in common; each task adds its own keys
(``head``, ``schedule``...) in its ``recipe.py``. The run itself is the one every
trainer shares, :func:`fastvit.run.training.train_task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TaskModel:
    variant: str  # the FastViT backbone
    pretrained: str | None  # ImageNet weights of the backbone, any layout fastvit loads
    drop_path: float  # stochastic depth of the backbone blocks


@dataclass
class TaskBackbone:
    frozen_stages: int  # -1: train all stages; k: freeze stem + stages 1..k
    norm_eval: bool  # frozen BatchNorm in the backbone (eval statistics, fixed affine)


@dataclass
class TaskData:
    batch_size: int  # per process
    workers: int  # DataLoader worker processes per process


@dataclass
class TaskOptim:
    lr: float  # AdamW, the peak learning rate
    weight_decay: float
    clip_grad: float | None  # max global grad norm; None disables


@dataclass
class TaskRun:
    amp: str  # auto | none | bf16 | fp16
    seed: int
    deterministic: bool  # deterministic kernels (bit-exact resume on GPU)
    keep_last: int  # newest ckpt_step*.pt kept
    log_every: int  # optimizer steps between loss lines


@dataclass
class EpochRun(TaskRun):
    eval_every: int  # epochs between evaluations (and the last epoch)


def load_task_recipe(cls: type, default: str, config: str | Path | None = None,
                     values: dict[str, Any] | None = None,
                     overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The packaged ``default`` recipe (or ``config``: a packaged name or a YAML path),
    then ``values`` set by plain flags (``{"optim.lr": 1e-4}``; None: not given), then
    ``--set`` overrides (``["optim.lr=1e-4"]``)."""
    from fastvit.run.recipes import apply_overrides, load_recipe

    given = {k: v for k, v in (values or {}).items() if v is not None}
    recipe = load_recipe(cls, config or default, "tasks", given)
    return apply_overrides(recipe, overrides)
