"""The Mask R-CNN training recipe: its keys, their types and their checks.

The values live in the packaged YAML ``fastvit/configs/tasks/
maskrcnn_fastvit_sa12_coco_1x.yaml`` (the paper's COCO 1x schedule); see
:mod:`fastvit.run.recipes` for how recipes are loaded and overridden.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.errors import ConfigError
from fastvit.run.recipes import check_task_keys

DEFAULT_RECIPE = "maskrcnn_fastvit_sa12_coco_1x"  # packaged in fastvit/configs/tasks/
SMALL_RECIPE = "maskrcnn_small"  # smaller heads and images: small data sets, CPU runs
#: ``--image-size N``: shorter side N, longer side at most N x this (COCO's 1333 / 800)
MAX_SIZE_RATIO = 1333 / 800


@dataclass
class DetectionRecipe:
    model: str
    pretrained: str | None  # ImageNet checkpoint, any layout
    epochs: int  # 1x schedule
    batch_size: int  # per process; the paper's total is 16 (8 GPUs x 2)
    lr: float  # AdamW, for the total batch of 16
    weight_decay: float
    lr_steps: tuple[int, ...]  # epochs after which lr *= lr_gamma
    lr_gamma: float
    warmup_iters: int  # linear warm-up (mmdet's 1x default)
    warmup_ratio: float
    clip_grad: float | None
    min_size: int  # shorter image side fed to the network
    max_size: int
    train_scales: tuple[int, ...]  # optional multi-scale shorter sides (data side)
    hflip: float
    fpn_channels: int  # head sizes: torchvision's / mmdet's Mask R-CNN
    box_head_dim: int
    mask_head_channels: int
    rois_per_image: int  # RoIs sampled per image for the box/mask heads
    rpn_proposals_train: int  # RPN proposals kept per image (training)
    rpn_proposals_test: int
    frozen_stages: int
    norm_eval: bool  # frozen BatchNorm in the backbone
    drop_path_rate: float
    amp: str  # auto | none | bf16 | fp16
    workers: int
    keep_last: int  # newest ckpt_step*.pt kept
    deterministic: bool  # deterministic kernels (bit-exact resume on GPU)
    seed: int
    eval_every_epochs: int
    log_every: int

    def describe(self) -> str:
        """Image scale and head sizes, for the run's header."""
        return (f"  data: images resized to shorter side {self.min_size} (longer <= "
                f"{self.max_size}) for training and evaluation; heads: FPN "
                f"{self.fpn_channels}, box {self.box_head_dim}, mask {self.mask_head_channels} "
                f"channels, {self.rois_per_image} RoIs/image, {self.rpn_proposals_train} "
                f"proposals (small data or CPU: --config {SMALL_RECIPE})")

    def validate(self) -> None:
        """Raise ConfigError for values the run cannot use."""
        check_task_keys(self)
        for name in ("epochs", "batch_size", "lr", "min_size", "max_size", "log_every",
                     "eval_every_epochs", "fpn_channels", "box_head_dim", "mask_head_channels",
                     "rois_per_image", "rpn_proposals_train", "rpn_proposals_test"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_size < 32 or self.max_size < self.min_size:
            raise ConfigError(f"need 32 <= min_size <= max_size, got {self.min_size}, "
                             f"{self.max_size}")
        if list(self.lr_steps) != sorted(self.lr_steps) or any(s <= 0 for s in self.lr_steps):
            raise ConfigError(f"lr_steps must be increasing positive epochs, got {self.lr_steps}")
        if not 0 < self.warmup_ratio <= 1:
            raise ConfigError(f"warmup_ratio must be in (0, 1], got {self.warmup_ratio}")
