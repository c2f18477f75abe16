"""Training recipes: a typed dataclass tree, YAML loading and dotted overrides.

A recipe is ``TrainConfig`` (sections ``model``, ``data``, ``optim``,
``schedule``, ``ema``, ``distill``, ``run``). The dataclass defaults are the
paper's ImageNet recipe; the files in ``fastvit/configs/*.yaml`` (the single
source of truth, shipped in the wheel; the top-level ``configs/`` folder is a
byte-identical copy checked by the tests) spell every value out per variant.

Precedence, lowest first: dataclass defaults < recipe file < plain CLI flags <
``--set section.key=value`` (in the order given). Values given as strings are
converted to the field's type, so ``--set optim.lr=5e-4`` works although YAML
1.1 reads ``5e-4`` as a string.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fastvit.errors import ConfigError

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
DISTILL_CHOICES = ("none", "hard", "soft")


@dataclass
class ModelConfig:
    variant: str = "fastvit_t8"
    num_classes: int | None = None  # None: the number of classes found in the data
    drop_path: float | None = None  # None: the variant's recipe value (VariantSpec)
    drop_rate: float = 0.0
    checkpoint: str | None = None  # initial weights (fine-tuning), any layout the core loads
    checkpoint_ema: bool = False  # take the EMA weights of a training checkpoint
    reset_classifier: bool = False  # load the checkpoint with its own head, then replace it
    require_checkpoint: bool = False  # fine-tune recipes refuse to start from random weights
    grad_checkpointing: bool = False


@dataclass
class DataConfig:
    path: str | None = None  # ImageFolder root (train/ + val/ or validation/) or "digits"
    image_size: int = 256
    batch_size: int = 128  # per process
    eval_batch_size: int | None = None  # None: 2 x batch_size
    workers: int = 8
    bad_images: str = "skip"  # "skip" (warn + count) or "error"
    crop_pct: float | None = None  # eval centre-crop ratio; None: the variant's
    interpolation: str = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    randaugment_magnitude: int = 9  # 0 disables RandAugment
    randaugment_num_ops: int = 2
    randaugment_mstd: float = 0.5  # std of the per-op magnitude noise
    random_erasing: float = 0.25
    mixup: float = 0.8  # alpha; 0 disables
    cutmix: float = 1.0  # alpha; 0 disables
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1


@dataclass
class OptimConfig:
    lr: float = 1e-3  # at lr_base_batch; scaled linearly with the global batch
    lr_base_batch: int = 1024
    global_batch: int | None = 1024  # reached with gradient accumulation; None: no accumulation
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float | None = None  # max global grad norm; None disables
    decay_layer_scale: bool = False  # official timm optimizer decays gammas (ndim 3); we don't


@dataclass
class ScheduleConfig:
    epochs: int = 300  # warmup + cosine; cooldown epochs come on top
    warmup_epochs: float = 5
    cooldown_epochs: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5


@dataclass
class EmaConfig:
    enabled: bool = True
    decay: float = 0.9995


@dataclass
class DistillConfig:
    kind: str = "none"  # none | hard | soft
    teacher: str = "regnet_y_16gf"  # torchvision classifier name or fastvit variant
    teacher_weights: str | None = None  # local file (torchvision state dict / fastvit checkpoint)
    alpha: float = 0.5  # weight of the distillation term
    temperature: float = 1.0  # soft distillation only


@dataclass
class RunConfig:
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, none on CPU) | none | bf16 | fp16
    threads: int | None = None  # torch intra-op threads; None: torch's default
    channels_last: bool = False
    deterministic: bool = False
    save_every_steps: int = 1000  # 0: only at epoch ends
    keep_last: int = 3
    log_every: int = 50
    eval_every: int = 1  # epochs
    stop_at_step: int | None = None  # end this invocation after this global step (resumable)
    progress: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)


# Keys that may change between a checkpoint and the run resuming it: where and
# how a run executes, not what it computes.
RESUME_FREE_KEYS = frozenset({
    "data.path", "data.workers", "data.bad_images", "data.eval_batch_size",
    "model.checkpoint", "model.checkpoint_ema", "model.require_checkpoint",
    "run.out_dir", "run.device", "run.threads", "run.save_every_steps", "run.keep_last",
    "run.log_every", "run.eval_every", "run.stop_at_step", "run.progress",
    "distill.teacher_weights",
})


# ---------------------------------------------------------------------------
# dict <-> dataclass
# ---------------------------------------------------------------------------


def to_dict(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (tuples become lists) that YAML and ``weights_only`` accept."""
    out: dict[str, dict[str, Any]] = {}
    for section in dataclasses.fields(cfg):
        values = dataclasses.asdict(getattr(cfg, section.name))
        out[section.name] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return out


def flatten(d: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in d.items() for k, v in values.items()}


def _section_types(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} expects {len(args)} numbers, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    try:
        if annotation is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if annotation is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"{key} expects a {name}, got {value!r}") from None
    return value


def from_dict(d: dict[str, Any], *, source: str = "recipe",
              base: TrainConfig | None = None) -> TrainConfig:
    """Build (or update ``base`` with) a config from a nested dict; unknown keys are errors."""
    cfg = base if base is not None else TrainConfig()
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(d).__name__}")
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    for name, values in d.items():
        if name not in sections:
            raise ConfigError(f"{source}: unknown section {name!r}; known: {', '.join(sections)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping")
        for key, value in values.items():
            set_value(cfg, f"{name}.{key}", value, source=source)
    return cfg


def set_value(cfg: TrainConfig, dotted: str, value: Any, *, source: str = "override") -> None:
    """Set ``section.key`` to ``value`` converted to the field's type."""
    section_name, _, key = dotted.partition(".")
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or not key:
        known = ", ".join(f.name for f in dataclasses.fields(cfg))
        raise ConfigError(f"{source}: unknown recipe key {dotted!r} (sections: {known})")
    hints = _section_types(type(section))
    if key not in hints:
        raise ConfigError(f"{source}: unknown recipe key {dotted!r}; keys of {section_name}: "
                          f"{', '.join(hints)}")
    setattr(section, key, _coerce(value, hints[key], dotted))


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``["optim.lr=5e-4", "data.mixup=0", ...]`` in order."""
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=5e-4), got {item!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        set_value(cfg, dotted.strip(), value, source="--set")
    return cfg


# ---------------------------------------------------------------------------
# Recipe files
# ---------------------------------------------------------------------------


def recipe_dir() -> Path:
    """The packaged recipes (``fastvit/configs``)."""
    return Path(str(resources.files("fastvit") / "configs"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a packaged recipe (``fastvit_sa12_distill``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        return path
    packaged = recipe_dir() / f"{name_or_path}.yaml"
    if not packaged.is_file():
        raise ConfigError(f"unknown recipe {name_or_path!r}; packaged recipes: "
                          f"{', '.join(list_recipes())} (or pass a .yaml path)")
    return packaged


def load_recipe(name_or_path: str, base: TrainConfig | None = None) -> TrainConfig:
    path = resolve_recipe(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return from_dict(data, source=str(path), base=base)


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def validate(cfg: TrainConfig) -> None:
    """Checks that need no data or devices; raises ConfigError."""
    from fastvit.model import VARIANTS

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
    if cfg.model.require_checkpoint and not cfg.model.checkpoint:
        raise ConfigError("this recipe fine-tunes a trained model: pass --checkpoint PATH "
                          "(or --set model.checkpoint=PATH)")
    if cfg.distill.kind != "none" and not cfg.distill.teacher_weights:
        raise ConfigError(f"distill.kind={cfg.distill.kind} needs the teacher's weights as a "
                          f"local file: --teacher-weights PATH (nothing is downloaded)")


def resume_mismatches(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Recipe keys whose values differ between a checkpoint's config and this run."""
    a, b = flatten(stored), flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RESUME_FREE_KEYS:
            continue
        if _normalise(a.get(key)) != _normalise(b.get(key)):
            diffs.append(f"{key}: checkpoint {a.get(key)!r}, this run {b.get(key)!r}")
    return diffs


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
