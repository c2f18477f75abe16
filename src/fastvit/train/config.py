"""The classification recipe: a typed tree of sections checked against the packaged YAML.

A recipe is ``TrainConfig`` (sections ``model``, ``data``, ``optim``,
``schedule``, ``ema``, ``distill``, ``run``). The packaged files
``fastvit/configs/*.yaml`` are the source of truth: the paper's ImageNet recipe
per variant spelled out in full, plus smaller recipes that start from one of
them (``base: fastvit_t8``). The dataclasses declare the type of every key and
:func:`validate` checks the values (see :mod:`fastvit.run.recipes` for the
rules shared with the task recipes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastvit.errors import ConfigError
from fastvit.models import VARIANTS
from fastvit.run import recipes
from fastvit.run.device import AMP_CHOICES

DISTILL_CHOICES = ("none", "hard", "soft")


@dataclass
class ModelConfig:
    variant: str
    num_classes: int | None  # None: the number of classes found in the data
    drop_path: float | None  # None: the variant's recipe value (VariantSpec)
    drop_rate: float
    pretrained: str | None  # initial weights: a tag (in1k...), file, URL or hf-hub:ORG/NAME
    pretrained_ema: bool  # take the EMA weights of a training checkpoint
    reset_classifier: bool  # load the weights with their own head, then replace it
    require_pretrained: bool  # fine-tune recipes refuse to start from random weights
    grad_checkpointing: bool


@dataclass
class DataConfig:
    path: str | None  # ImageFolder root (train/ + val/ or validation/) or "digits"
    image_size: int
    batch_size: int  # per process
    eval_batch_size: int | None  # None: 2 x batch_size
    workers: int
    bad_images: str  # "skip" (warn + count) or "error"
    crop_pct: float | None  # eval centre-crop ratio; None: the variant's
    interpolation: str
    scale: tuple[float, float]
    ratio: tuple[float, float]
    hflip: float
    randaugment_magnitude: int  # 0 disables RandAugment
    randaugment_num_ops: int
    randaugment_mstd: float  # std of the per-op magnitude noise
    random_erasing: float
    mixup: float  # alpha; 0 disables
    cutmix: float  # alpha; 0 disables
    mix_prob: float
    switch_prob: float
    label_smoothing: float


@dataclass
class OptimConfig:
    lr: float  # at lr_base_batch; scaled linearly with the global batch
    lr_base_batch: int
    global_batch: int | None  # reached with gradient accumulation; None: no accumulation
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    clip_grad: float | None  # max global grad norm; None disables
    decay_layer_scale: bool  # official timm optimizer decays gammas (ndim 3); we don't


@dataclass
class ScheduleConfig:
    epochs: int  # warmup + cosine; cooldown epochs come on top
    warmup_epochs: float
    cooldown_epochs: int
    warmup_lr: float
    min_lr: float


@dataclass
class EmaConfig:
    enabled: bool
    decay: float


@dataclass
class DistillConfig:
    kind: str  # none | hard | soft
    teacher: str  # torchvision classifier name or fastvit variant
    teacher_weights: str | None  # local file (torchvision state dict / fastvit checkpoint)
    alpha: float  # weight of the distillation term
    temperature: float  # soft distillation only


@dataclass
class RunConfig:
    out_dir: str
    seed: int
    device: str  # auto | cpu | cuda | cuda:N
    amp: str  # auto (bf16/fp16 on CUDA, none on CPU) | none | bf16 | fp16
    threads: int | None  # torch intra-op threads; None: torch's default
    channels_last: bool
    deterministic: bool
    save_every_steps: int  # 0: only at epoch ends
    keep_last: int
    log_every: int
    eval_every: int  # epochs
    max_steps: int | None  # end this invocation after this global step (resumable)
    progress: bool


@dataclass
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    ema: EmaConfig
    distill: DistillConfig
    run: RunConfig


# Keys that may change between a checkpoint and the run resuming it: where and
# how a run executes, not what it computes.
RESUME_FREE_KEYS = frozenset({
    "data.path", "data.workers", "data.bad_images", "data.eval_batch_size",
    "model.pretrained", "model.pretrained_ema", "model.require_pretrained",
    "run.out_dir", "run.device", "run.threads", "run.save_every_steps", "run.keep_last",
    "run.log_every", "run.eval_every", "run.max_steps", "run.progress",
    "distill.teacher_weights",
})


def list_recipes() -> list[str]:
    """Names of the packaged classification recipes."""
    return recipes.list_recipes()


def load_recipe(name_or_path: str | Path) -> TrainConfig:
    """A packaged recipe by name (``fastvit_sa12``) or a YAML file."""
    return recipes.load_recipe(TrainConfig, name_or_path)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``["optim.lr=5e-4", "data.mixup=0", ...]`` in order."""
    return recipes.apply_overrides(cfg, overrides)


def set_value(cfg: TrainConfig, dotted: str, value: Any, *, source: str = "override") -> None:
    recipes.set_value(cfg, dotted, value, source=source)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return recipes.to_dict(cfg)


def dump_yaml(cfg: TrainConfig) -> str:
    return recipes.dump_yaml(cfg)


def validate(cfg: TrainConfig) -> None:
    """Checks that need no data or devices; raises ConfigError."""
    if cfg.model.variant not in VARIANTS:
        raise ConfigError(f"model.variant {cfg.model.variant!r} is not a FastViT variant; "
                          f"choose one of {', '.join(VARIANTS)}")
    if cfg.run.amp not in AMP_CHOICES:
        raise ConfigError(f"run.amp must be one of {AMP_CHOICES}, got {cfg.run.amp!r}")
    if cfg.distill.kind not in DISTILL_CHOICES:
        raise ConfigError(f"distill.kind must be one of {DISTILL_CHOICES}, "
                          f"got {cfg.distill.kind!r}")
    if cfg.data.bad_images not in ("skip", "error"):
        raise ConfigError(f"data.bad_images must be skip or error, got {cfg.data.bad_images!r}")
    positive = {"data.batch_size": cfg.data.batch_size, "data.image_size": cfg.data.image_size,
                "schedule.epochs": cfg.schedule.epochs, "optim.lr_base_batch":
                cfg.optim.lr_base_batch, "run.keep_last": cfg.run.keep_last,
                "run.log_every": cfg.run.log_every, "run.eval_every": cfg.run.eval_every}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {cfg.optim.lr}")
    if not 0 <= cfg.ema.decay <= 1:
        raise ConfigError(f"ema.decay must be in [0, 1], got {cfg.ema.decay}")
    if cfg.schedule.warmup_epochs < 0 or cfg.schedule.cooldown_epochs < 0:
        raise ConfigError("schedule.warmup_epochs and cooldown_epochs must be >= 0")
    if cfg.schedule.warmup_epochs > cfg.schedule.epochs:
        raise ConfigError("schedule.warmup_epochs cannot exceed schedule.epochs")
    if cfg.run.threads is not None and cfg.run.threads <= 0:
        raise ConfigError(f"run.threads must be positive, got {cfg.run.threads}")
    if cfg.data.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {cfg.data.workers}")
    if cfg.model.require_pretrained and not cfg.model.pretrained:
        raise ConfigError("this recipe fine-tunes a trained model: pass --pretrained in1k|PATH "
                          "(or --set model.pretrained=PATH)")
    if cfg.distill.kind != "none" and not cfg.distill.teacher_weights:
        raise ConfigError(f"distill.kind={cfg.distill.kind} needs the teacher's weights as a "
                          f"local file: --teacher-weights PATH (nothing is downloaded)")


def resume_mismatches(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Recipe keys whose values differ between a checkpoint's config and this run."""
    return recipes.recipe_differences(stored, current, RESUME_FREE_KEYS)


def build_config(recipe: str | Path | None = None, values: dict[str, Any] | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Recipe, then ``values`` (``{"data.path": ..., "optim.lr": ...}``: what plain
    command-line flags set), then ``--set`` style ``overrides``, in that order.

    Without ``recipe``: the packaged recipe of ``values["model.variant"]``
    (``digits_t8`` for ``data.path=digits``, ``fastvit_t8`` when nothing is named).
    """
    values = {k: v for k, v in (values or {}).items() if v is not None}
    if recipe is None:
        recipe = ("digits_t8" if values.get("data.path") == "digits"
                  else values.get("model.variant", "fastvit_t8"))
    cfg = load_recipe(recipe)
    for key, value in values.items():
        set_value(cfg, key, value, source="--" + key.rsplit(".", 1)[-1].replace("_", "-"))
    return apply_overrides(cfg, list(overrides))
