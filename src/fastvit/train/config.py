"""The classification recipe: a typed tree of sections checked against the packaged YAML.

A recipe is ``TrainConfig`` (sections ``model``, ``data``, ``optim``,
``schedule``, ``ema``, ``distill``, ``run``). The packaged files
``fastvit/configs/*.yaml`` are the source of truth: the paper's ImageNet recipe
(``imagenet.yaml``, spelled out in full; each variant's recipe adds its row of the
variant table), plus recipes that start from one of them (``base: fastvit_t8``).
The dataclasses declare the type of every key and
:func:`validate` checks the values (see :mod:`fastvit.run.recipes` for the
rules shared with the task recipes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastvit.errors import ConfigError, FastVitError
from fastvit.models import VARIANTS
from fastvit.run import recipes
from fastvit.run.device import AMP_CHOICES
from fastvit.run.variant_recipes import DISTILL_RECIPE, IMAGENET_RECIPE, variant_recipe_names
from fastvit.train.freeze import FREEZE_CHOICES

DISTILL_CHOICES = ("none", "hard", "soft")
#: fewer training images than this is "far from ImageNet scale" (1.28M): a run that names
#: no recipe gets ``small`` (or ``finetune`` with --pretrained) instead of the paper's
SMALL_DATA_IMAGES = 100_000
log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    variant: str
    num_classes: int | None  # None: the number of classes found in the data
    drop_path: float | None  # None: the variant's recipe value (VariantSpec)
    drop_rate: float
    pretrained: str | None  # initial weights: a tag (in1k...), file, URL or hf-hub:ORG/NAME
    pretrained_ema: bool  # take the EMA weights of a training checkpoint
    reset_classifier: bool  # load the weights with their own head, then replace it
    freeze: str | None  # None: everything trains; "backbone": only the classifier (head.fc)
    require_pretrained: bool  # fine-tune recipes refuse to start from random weights
    grad_checkpointing: bool


@dataclass
class DataConfig:
    path: str | None  # any --data source (fastvit.data.sources) or "digits"
    val_fraction: float  # held out of train/ (seeded, stratified) when there is no val/
    image_size: int
    batch_size: int  # per process and micro-batch
    eval_batch_size: int | None  # None: 2 x batch_size
    workers: int | None  # DataLoader workers per process; None: the machine's cores (<= 8)
    bad_images: str  # "skip" (one line per file, OUT/skipped_images.txt) or "error"
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
    lr: float | None  # the absolute peak lr; None: from lr_base
    lr_base: float | None  # the peak lr at lr_base_batch images per step, scaled linearly
    lr_base_batch: int  # with the global batch (the paper: 1e-3 at 1024)
    global_batch: int | None  # images per optimizer step (by gradient accumulation);
    #                           None: batch_size x processes x accum_steps
    accum_steps: int  # micro-batches per optimizer step when global_batch is None
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    clip_grad: float | None  # max global grad norm; None disables
    decay_layer_scale: bool  # official timm optimizer decays gammas (ndim 3); we don't


@dataclass
class ScheduleConfig:
    epochs: int  # in total: warmup + cosine + cooldown
    warmup_epochs: float  # linear from warmup_lr (shortened with a note in short runs)
    cooldown_epochs: float  # the last epochs, at min_lr (inside ``epochs``)
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


def load_recipe(name_or_path: str | Path) -> TrainConfig:
    """A packaged recipe by name (``fastvit_sa12``) or a YAML file."""
    return recipes.load_recipe(TrainConfig, name_or_path)


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
    if cfg.model.freeze not in (None, *FREEZE_CHOICES):
        raise ConfigError(f"model.freeze must be null or one of {', '.join(FREEZE_CHOICES)}, "
                          f"got {cfg.model.freeze!r}")
    if cfg.model.freeze and (cfg.model.drop_path or 0.0) > 0:
        raise ConfigError(f"model.freeze={cfg.model.freeze} trains the classifier alone: drop "
                          f"path on the frozen network only adds noise; set model.drop_path "
                          f"to 0 (got {cfg.model.drop_path})")
    if cfg.data.bad_images not in ("skip", "error"):
        raise ConfigError(f"data.bad_images must be skip or error, got {cfg.data.bad_images!r}")
    positive = {"data.batch_size": cfg.data.batch_size, "data.image_size": cfg.data.image_size,
                "schedule.epochs": cfg.schedule.epochs, "optim.lr_base_batch":
                cfg.optim.lr_base_batch, "optim.accum_steps": cfg.optim.accum_steps,
                "run.keep_last": cfg.run.keep_last, "run.log_every": cfg.run.log_every,
                "run.eval_every": cfg.run.eval_every}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    _validate_lr(cfg.optim)
    if cfg.optim.global_batch is not None:
        if cfg.optim.global_batch <= 0:
            raise ConfigError(f"optim.global_batch must be positive, got "
                              f"{cfg.optim.global_batch}")
        if cfg.optim.accum_steps != 1:
            raise ConfigError("optim.global_batch and optim.accum_steps both set the "
                              "accumulation: give one (--global-batch or --accum-steps)")
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    if not 0 <= cfg.ema.decay <= 1:
        raise ConfigError(f"ema.decay must be in [0, 1], got {cfg.ema.decay}")
    if cfg.schedule.warmup_epochs < 0 or cfg.schedule.cooldown_epochs < 0:
        raise ConfigError("schedule.warmup_epochs and cooldown_epochs must be >= 0")
    if cfg.run.threads is not None and cfg.run.threads <= 0:
        raise ConfigError(f"run.threads must be positive, got {cfg.run.threads}")
    if cfg.data.workers is not None and cfg.data.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {cfg.data.workers}")
    if cfg.model.require_pretrained and not cfg.model.pretrained:
        raise ConfigError("this recipe fine-tunes a trained model: pass --pretrained in1k|PATH "
                          "(or --set model.pretrained=PATH)")
    if cfg.distill.kind != "none" and not cfg.distill.teacher_weights:
        raise ConfigError(f"distill.kind={cfg.distill.kind} needs the teacher's weights as a "
                          f"local file: --teacher-weights PATH (nothing is downloaded)")


def _validate_lr(optim: OptimConfig) -> None:
    """Exactly one of the absolute ``lr`` and the scaled ``lr_base``."""
    if (optim.lr is None) == (optim.lr_base is None):
        raise ConfigError("set exactly one of optim.lr (the absolute learning rate, --lr) and "
                          "optim.lr_base (scaled by global batch / optim.lr_base_batch, "
                          "--lr-base); set the other to null"
                          + (f" (got lr={optim.lr}, lr_base={optim.lr_base})"
                             if optim.lr is not None else ""))
    value = optim.lr if optim.lr is not None else optim.lr_base
    if value <= 0:
        raise ConfigError(f"the learning rate must be positive, got {value}")


def resume_mismatches(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Recipe keys whose values differ between a checkpoint's config and this run."""
    return recipes.recipe_differences(stored, current, RESUME_FREE_KEYS)


def build_config(recipe: str | Path | None = None, values: dict[str, Any] | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Recipe, then ``values`` (``{"data.path": ..., "optim.lr": ...}``: what plain
    command-line flags set), then ``--set`` style ``overrides``, in that order.

    Plain values (and ``--set`` overrides alike) mean what they say: ``optim.lr``
    is the absolute learning rate (the recipe's ``lr_base`` is dropped;
    ``optim.lr_base`` does the reverse); ``optim.global_batch`` or
    ``optim.accum_steps`` replaces the recipe's accumulation, and a
    ``data.batch_size`` without either means none. Without ``recipe``:
    :func:`default_recipe`.
    """
    values = {k: v for k, v in (values or {}).items() if v is not None}
    if "optim.lr" in values and "optim.lr_base" in values:
        raise ConfigError("--lr (absolute) and --lr-base (scaled by the global batch) "
                          "both set the learning rate: give one")
    _complete(values)
    if recipe is None:
        recipe = default_recipe(values)
    else:
        _advise(str(recipe), values.get("data.path"))
    cfg = load_recipe(recipe)
    for key, value in values.items():
        recipes.set_value(cfg, key, value, source="--" + key.rsplit(".", 1)[-1].replace("_", "-"))
    for item in overrides:  # --set optim.lr=... means what --lr means, and so on
        key, value = recipes.parse_override(item)
        changes = {key: value}
        _complete(changes)
        for other, implied in changes.items():
            if other != key:
                recipes.set_value(cfg, other, implied, source="--set")
        recipes.set_value(cfg, key, value, source="--set")
    return cfg


def _complete(values: dict[str, Any]) -> None:
    """Add what a plain setting implies: an absolute ``lr`` drops the scaled ``lr_base``
    (and the reverse); a global batch or accumulation replaces the other; a batch size
    with neither means no accumulation."""
    if values.get("optim.lr") is not None and "optim.lr_base" not in values:
        values["optim.lr_base"] = None
    elif values.get("optim.lr_base") is not None and "optim.lr" not in values:
        values["optim.lr"] = None
    if "optim.accum_steps" in values:
        values.setdefault("optim.global_batch", None)
    elif values.get("optim.global_batch") is not None:
        values["optim.accum_steps"] = 1
    elif "data.batch_size" in values and "optim.global_batch" not in values:
        values.update({"optim.global_batch": None, "optim.accum_steps": 1})


def default_recipe(values: dict[str, Any]) -> str:
    """The recipe of a run that names none: ``digits_t8`` for ``--data digits``;
    for a folder far from ImageNet scale (under :data:`SMALL_DATA_IMAGES` training
    images), or a variant without a paper recipe (the MobileCLIP towers), ``finetune``
    with ``--pretrained``, else ``small``; otherwise the paper's ImageNet recipe of the
    variant. The choice is logged with its reason."""
    data, variant = values.get("data.path"), values.get("model.variant", "fastvit_t8")
    if data == "digits":
        return "digits_t8"
    count = _count_train_images(data)
    name = "finetune" if values.get("model.pretrained") else "small"
    if variant not in variant_recipe_names():  # a MobileCLIP tower: no ImageNet recipe
        _log_on_first_rank("recipe %s: %s has no paper recipe (a MobileCLIP image tower; "
                           "--config names another)", name, variant)
        return name
    if count is None or count >= SMALL_DATA_IMAGES:
        return variant
    _log_on_first_rank("recipe %s: %d training images are far from ImageNet scale (the "
                       "paper's recipe is --config %s)", name, count, variant)
    return name


def _advise(recipe: str, data: Any) -> None:
    """One line when a paper ImageNet recipe meets a small folder."""
    if recipe not in (IMAGENET_RECIPE, DISTILL_RECIPE, *variant_recipe_names()):
        return
    count = _count_train_images(data)
    if count is not None and count < SMALL_DATA_IMAGES:
        _log_on_first_rank("note: %s is the paper's ImageNet recipe; for %d training images "
                           "--config small (from scratch) or --config finetune --pretrained "
                           "PATH would suit better", recipe, count)


def _log_on_first_rank(message: str, *args: Any) -> None:
    """Recipes resolve before the process group is up: under torchrun only rank 0 says so."""
    if os.environ.get("RANK", "0") == "0":
        log.info(message, *args)


def _count_train_images(data: Any) -> int | None:
    """Training images of ``data`` (a folder's counting stops at the threshold; shards:
    their ``shards.json``; datasets: the train split's rows); None: not known."""
    from fastvit.data.sources import resolve_source

    if not data or data == "digits":
        return None
    try:
        return resolve_source(str(data)).train_count(limit=SMALL_DATA_IMAGES)
    except FastVitError:
        return None  # reported properly when the datasets are built
