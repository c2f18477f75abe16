"""The Semantic FPN training recipe; defaults are the paper's ADE20K setting.

``configs/tasks/semfpn_fastvit_sa12_ade20k_40k.yaml`` spells the same values out
(a test keeps the two in sync); command-line options override either.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.model import VARIANTS


@dataclass(frozen=True)
class SegmentationRecipe:
    model: str = "fastvit_sa12"
    pretrained: str | None = None       # ImageNet checkpoint, any layout
    num_classes: int = 150              # ADE20K; label 0 ("other") is ignored
    iters: int = 40_000
    batch_size: int = 4                 # per process; the paper's total is 32 (8 GPUs x 4)
    lr: float = 2e-4                    # AdamW
    weight_decay: float = 1e-4
    poly_power: float = 0.9             # lr = base * (1 - t / iters) ** power
    warmup_iters: int = 0
    warmup_ratio: float = 1e-3
    clip_grad: float | None = None
    crop_size: int = 512
    base_size: int = 512                # shorter side before random scaling / at test time
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: float = 0.5
    photometric: bool = True
    fpn_channels: int = 256
    head_channels: int = 128
    head_norm: str = "gn"               # "gn" or "bn" (SyncBatchNorm under DDP)
    dropout: float = 0.1
    frozen_stages: int = -1
    norm_eval: bool = True              # frozen BatchNorm in the backbone
    drop_path_rate: float = 0.0
    eval_mode: str = "whole"            # "whole" or "slide"
    eval_stride: int = 341              # sliding-window stride (window = crop_size)
    eval_every: int = 4000              # iterations; also the checkpoint interval
    amp: bool = False
    workers: int = 4
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.model not in VARIANTS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(VARIANTS)}")
        for name in ("num_classes", "iters", "batch_size", "lr", "crop_size", "base_size",
                     "fpn_channels", "head_channels", "eval_stride", "eval_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_classes >= 255:
            raise ValueError("num_classes must be below 255 (255 marks ignored pixels)")
        if self.crop_size % 32:
            raise ValueError(f"crop_size must be a multiple of 32, got {self.crop_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, "
                             f"got {self.scale_range}")
        if self.eval_mode not in ("whole", "slide"):
            raise ValueError(f"eval_mode must be 'whole' or 'slide', got {self.eval_mode!r}")
        if self.head_norm not in ("gn", "bn"):
            raise ValueError(f"head_norm must be 'gn' or 'bn', got {self.head_norm!r}")
