"""The run's effective settings, derived from the recipe, the data and the processes.

``make_plan`` turns the recipe into numbers (global batch, accumulation, steps,
learning rate, warmup and cooldown in steps) and :func:`header_lines` states
them at the start of the run, so that nothing a flag or recipe implies is
silent. The rules, the same as timm's and torchvision's training scripts:

* ``schedule.epochs`` is the whole run; a cooldown is its last epochs. Warmup
  plus cooldown longer than half of a short run are shortened (with a note).
* the global batch is ``batch_size x processes x accum_steps`` unless
  ``optim.global_batch`` asks for more (reached by gradient accumulation);
* ``optim.lr`` is the peak learning rate as given; ``optim.lr_base`` is
  scaled linearly: ``lr_base x global_batch / lr_base_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastvit.errors import ConfigError
from fastvit.run.device import default_workers
from fastvit.run.distributed import DistEnv
from fastvit.run.lr_schedule import LrSchedule
from fastvit.run.optim import scaled_lr
from fastvit.train.config import DataConfig, TrainConfig
from fastvit.train.freeze import Frozen

#: warmup + cooldown may take at most this share of the run before they are shortened
MAX_WARMUP_COOLDOWN_SHARE = 0.5


@dataclass
class ClassificationPlan:
    """Sizes derived from the recipe, the data and the number of processes."""

    world_size: int
    per_device_batch: int
    accum: int
    global_batch: int
    steps_per_epoch: int
    total_epochs: int
    lr: float
    lr_rule: str = ""  # how ``lr`` was obtained, for the header
    warmup_epochs: float = 0.0
    cooldown_epochs: float = 0.0
    workers: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)

    @property
    def cooldown_steps(self) -> int:
        return round(self.cooldown_epochs * self.steps_per_epoch)

    @property
    def cosine_steps(self) -> int:
        return self.total_steps - self.warmup_steps - self.cooldown_steps

    def lr_schedule(self, warmup_lr: float, min_lr: float) -> LrSchedule:
        """timm's: linear warmup from ``warmup_lr``, cosine from ``lr`` to ``min_lr``, then
        ``min_lr`` for the cooldown (``warmup_lr`` and ``min_lr`` are absolute)."""
        return LrSchedule("cosine", main_steps=max(self.cosine_steps, 1),
                          main_start=self.warmup_steps, min_ratio=min_lr / self.lr,
                          warmup_steps=self.warmup_steps, warmup_start=warmup_lr / self.lr)


def make_plan(cfg: TrainConfig, env: DistEnv, train_len: int) -> ClassificationPlan:
    """The plan of a run on ``train_len`` training images; ConfigError when it cannot run."""
    batch, world = cfg.data.batch_size, env.world_size
    world_batch = batch * world
    if cfg.optim.global_batch is not None:
        global_batch = cfg.optim.global_batch
        if global_batch % world_batch:
            raise ConfigError(
                f"optim.global_batch={global_batch} is not a multiple of batch_size x "
                f"processes = {batch} x {world}; gradient accumulation needs a whole number "
                f"of micro-batches (or drop --global-batch: no accumulation)")
        accum = global_batch // world_batch
    else:
        accum = cfg.optim.accum_steps
        global_batch = world_batch * accum
    per_rank = -(-train_len // world)
    steps = per_rank // batch // accum
    if steps == 0:
        raise ConfigError(
            f"the training split has {train_len} images: fewer than one global batch of "
            f"{global_batch} ({world} process(es) x batch {batch} x accumulation {accum}); "
            f"lower --batch-size" + (" or --global-batch / --accum-steps" if accum > 1 else ""))
    o = cfg.optim
    if o.lr is not None:
        lr, rule = o.lr, "as given"
    else:
        assert o.lr_base is not None  # validate() guarantees one of the two
        lr = scaled_lr(o.lr_base, global_batch, o.lr_base_batch)
        rule = f"lr_base {o.lr_base:g} x {global_batch} / {o.lr_base_batch}"
    plan = ClassificationPlan(world, batch, accum, global_batch, steps, cfg.schedule.epochs,
                              lr, rule, workers=cfg.data.workers if cfg.data.workers is not None
                              else default_workers(world))
    _fit_warmup_and_cooldown(plan, cfg.schedule.warmup_epochs, cfg.schedule.cooldown_epochs)
    return plan


def _fit_warmup_and_cooldown(plan: ClassificationPlan, warmup: float, cooldown: float) -> None:
    """Scale warmup and cooldown down together when they take more than half the run."""
    budget = plan.total_epochs * MAX_WARMUP_COOLDOWN_SHARE
    if warmup + cooldown <= budget:
        plan.warmup_epochs, plan.cooldown_epochs = warmup, cooldown
        return
    factor = budget / (warmup + cooldown)
    plan.warmup_epochs, plan.cooldown_epochs = warmup * factor, cooldown * factor
    plan.notes.append(
        f"note: warmup {warmup:g} + cooldown {cooldown:g} epochs do not fit a "
        f"{plan.total_epochs}-epoch run: shortened to warmup {plan.warmup_epochs:.3g} + "
        f"cooldown {plan.cooldown_epochs:.3g} epochs (at most half of the run; "
        f"--warmup-epochs / --cooldown-epochs choose them)")


def augmentation_text(data: DataConfig) -> str:
    """One phrase for the training augmentation of ``data``."""
    if data.path == "digits":
        return "the digits' own light affine jitter"
    parts = [f"RandomResizedCrop {data.image_size} (scale {data.scale[0]:g}-{data.scale[1]:g})",
             f"hflip {data.hflip:g}"]
    if data.randaugment_magnitude > 0:
        parts.append(f"RandAugment m{data.randaugment_magnitude} n{data.randaugment_num_ops}")
    if data.random_erasing > 0:
        parts.append(f"random erasing {data.random_erasing:g}")
    if data.mixup > 0 or data.cutmix > 0:
        parts.append(f"mixup {data.mixup:g} / CutMix {data.cutmix:g}")
    else:
        parts.append("no mixup/CutMix")
    parts.append(f"label smoothing {data.label_smoothing:g}")
    return ", ".join(parts)


def header_lines(cfg: TrainConfig, plan: ClassificationPlan, *, classes: int,
                 train_images: int, val_images: int, val_source: str,
                 frozen: Frozen | None = None) -> list[str]:
    """The start-of-run statement of what the run will train, how long and on what
    (the run path adds the device, AMP and compile line); ``frozen``: what
    ``model.freeze`` froze."""
    s = cfg.schedule
    start = f"from {cfg.model.pretrained}" if cfg.model.pretrained else "from random weights"
    warm = (f"warmup {plan.warmup_epochs:.3g} epoch(s) from {s.warmup_lr:g}"
            if plan.warmup_steps else "no warmup")
    cool = (f", cooldown {plan.cooldown_epochs:.3g} epoch(s) at {s.min_lr:g}"
            if plan.cooldown_steps else ", no cooldown")
    batch = f"{plan.world_size} process(es) x batch {plan.per_device_batch}"
    batch += (f" x {plan.accum} accumulated = global batch {plan.global_batch}" if plan.accum > 1
              else f" = global batch {plan.global_batch} (no accumulation)")
    ema = f"EMA {cfg.ema.decay:g}" if cfg.ema.enabled else "no EMA"
    return [
        f"fastvit train: {cfg.model.variant} {start}, {classes} classes, {train_images} train / "
        f"{val_images} val images; val: {val_source}",
        f"  schedule: {plan.total_epochs} epoch(s) x {plan.steps_per_epoch} steps = "
        f"{plan.total_steps} steps; {warm}, cosine to {s.min_lr:g}{cool}",
        f"  batch: {batch}; lr {plan.lr:.3g} ({plan.lr_rule}), weight decay "
        f"{cfg.optim.weight_decay:g}",
        f"  augmentation: {augmentation_text(cfg.data)}; {ema}",
        *([f"  {frozen.describe()}"] if frozen is not None else []),
        *plan.notes,
    ]
