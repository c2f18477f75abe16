"""The Semantic FPN training recipe: its keys, their types and their checks.

The values live in the packaged YAML ``fastvit/configs/tasks/
semfpn_fastvit_sa12_ade20k_40k.yaml`` (the paper's ADE20K setting); see
:mod:`fastvit.run.recipes` for how recipes are loaded and overridden.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.errors import ConfigError
from fastvit.run.recipes import check_task_keys

DEFAULT_RECIPE = "semfpn_fastvit_sa12_ade20k_40k"  # packaged in fastvit/configs/tasks/


@dataclass
class SegmentationRecipe:
    model: str
    pretrained: str | None  # ImageNet checkpoint, any layout
    num_classes: int  # ADE20K; label 0 ("other") is ignored
    iters: int
    batch_size: int  # per process; the paper's total is 32 (8 GPUs x 4)
    lr: float  # AdamW
    weight_decay: float
    poly_power: float  # lr = base * (1 - t / iters) ** power
    warmup_iters: int
    warmup_ratio: float
    clip_grad: float | None
    crop_size: int  # training crops (and sliding-window evaluation windows)
    base_size: int | None  # shorter side before random scaling / at test; None: crop_size
    scale_range: tuple[float, float]
    hflip: float
    photometric: bool
    fpn_channels: int
    head_channels: int
    head_norm: str  # "gn" or "bn" (SyncBatchNorm under DDP)
    dropout: float
    frozen_stages: int
    norm_eval: bool  # frozen BatchNorm in the backbone
    drop_path_rate: float
    eval_mode: str  # "whole" or "slide"
    eval_stride: int  # sliding-window stride (window = crop_size)
    eval_every: int  # iterations; also the checkpoint interval
    amp: str  # auto | none | bf16 | fp16
    workers: int
    keep_last: int  # newest ckpt_step*.pt kept
    deterministic: bool  # deterministic kernels (bit-exact resume on GPU)
    seed: int
    log_every: int

    @property
    def scale(self) -> int:
        """The shorter image side the data is resized to: ``base_size``, else ``crop_size``
        (so ``--crop-size 128`` does not enlarge 128-pixel images to ADE20K's 512)."""
        return self.base_size if self.base_size is not None else self.crop_size

    def describe(self) -> str:
        """How the data is scaled, for the run's header."""
        lo, hi = self.scale_range
        origin = "--base-size" if self.base_size is not None else "= crop size"
        return (f"  data: shorter side {self.scale} ({origin}) x U({lo:g}, {hi:g}), random "
                f"{self.crop_size} x {self.crop_size} crops; evaluation at shorter side "
                f"{self.scale}, {self.eval_mode}")

    def validate(self) -> None:
        """Raise ConfigError for values the run cannot use."""
        check_task_keys(self)
        for name in ("num_classes", "iters", "batch_size", "lr", "crop_size", "scale",
                     "fpn_channels", "head_channels", "eval_stride", "eval_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_classes >= 255:
            raise ConfigError("num_classes must be below 255 (255 marks ignored pixels)")
        if self.crop_size % 32:
            raise ConfigError(f"crop_size must be a multiple of 32, got {self.crop_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, "
                             f"got {self.scale_range}")
        if self.eval_mode not in ("whole", "slide"):
            raise ConfigError(f"eval_mode must be 'whole' or 'slide', got {self.eval_mode!r}")
        if self.head_norm not in ("gn", "bn"):
            raise ConfigError(f"head_norm must be 'gn' or 'bn', got {self.head_norm!r}")
