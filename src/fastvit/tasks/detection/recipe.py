"""The Mask R-CNN training recipe; defaults are the paper's COCO 1x schedule.

``configs/tasks/maskrcnn_fastvit_sa12_coco_1x.yaml`` spells the same values out
(a test keeps the two in sync); command-line options override either.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.model import VARIANTS


@dataclass(frozen=True)
class DetectionRecipe:
    model: str = "fastvit_sa12"
    pretrained: str | None = None       # ImageNet checkpoint, any layout
    epochs: int = 12                    # 1x schedule
    batch_size: int = 2                 # per process; the paper's total is 16 (8 GPUs x 2)
    lr: float = 2e-4                    # AdamW, for the total batch of 16
    weight_decay: float = 1e-4
    lr_steps: tuple[int, ...] = (8, 11)  # epochs after which lr *= lr_gamma
    lr_gamma: float = 0.1
    warmup_iters: int = 500             # linear warm-up (mmdet's 1x default)
    warmup_ratio: float = 0.001
    clip_grad: float | None = None
    min_size: int = 800                 # shorter image side fed to the network
    max_size: int = 1333
    train_scales: tuple[int, ...] = ()  # optional multi-scale shorter sides (data side)
    hflip: float = 0.5
    fpn_channels: int = 256             # head sizes: torchvision's / mmdet's Mask R-CNN
    box_head_dim: int = 1024
    mask_head_channels: int = 256
    rois_per_image: int = 512           # RoIs sampled per image for the box/mask heads
    rpn_proposals_train: int = 2000     # RPN proposals kept per image (training)
    rpn_proposals_test: int = 1000
    frozen_stages: int = -1
    norm_eval: bool = True              # frozen BatchNorm in the backbone
    drop_path_rate: float = 0.0
    amp: bool = False
    workers: int = 4
    seed: int = 0
    eval_every_epochs: int = 1
    log_every: int = 20

    def __post_init__(self) -> None:
        if self.model not in VARIANTS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(VARIANTS)}")
        for name in ("epochs", "batch_size", "lr", "min_size", "max_size", "log_every",
                     "eval_every_epochs", "fpn_channels", "box_head_dim", "mask_head_channels",
                     "rois_per_image", "rpn_proposals_train", "rpn_proposals_test"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_size < 32 or self.max_size < self.min_size:
            raise ValueError(f"need 32 <= min_size <= max_size, got {self.min_size}, "
                             f"{self.max_size}")
        if list(self.lr_steps) != sorted(self.lr_steps) or any(s <= 0 for s in self.lr_steps):
            raise ValueError(f"lr_steps must be increasing positive epochs, got {self.lr_steps}")
        if not 0 < self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in (0, 1], got {self.warmup_ratio}")
