"""The Mask R-CNN training recipe: its keys, their types and their checks.

The values live in the packaged YAML ``fastvit/configs/tasks/
maskrcnn_fastvit_sa12_coco_1x.yaml`` (the paper's COCO 1x schedule); see
:mod:`fastvit.run.recipes` for how recipes are loaded and overridden. The shared
sections (``model``, ``backbone``, ``optim``, ``run``) are those of every trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.errors import ConfigError
from fastvit.run.recipes import check_positive, check_task_keys
from fastvit.tasks.recipes import EpochRun, TaskBackbone, TaskData, TaskModel, TaskOptim

DEFAULT_RECIPE = "maskrcnn_fastvit_sa12_coco_1x"  # packaged in fastvit/configs/tasks/
SMALL_RECIPE = "maskrcnn_small"  # smaller heads and images: small data sets, CPU runs
#: ``--image-size N``: shorter side N, longer side at most N x this (COCO's 1333 / 800)
MAX_SIZE_RATIO = 1333 / 800


@dataclass
class DetectionData(TaskData):
    min_size: int  # shorter image side fed to the network
    max_size: int
    train_scales: tuple[int, ...]  # optional multi-scale shorter sides (data side)
    hflip: float


@dataclass
class DetectionHead:
    fpn_channels: int  # torchvision's / mmdet's Mask R-CNN sizes
    box_dim: int  # the box head's two fully connected layers
    mask_channels: int  # the mask head's convolutions
    rois_per_image: int  # RoIs sampled per image for the box/mask heads
    rpn_proposals_train: int  # RPN proposals kept per image (training)
    rpn_proposals_test: int


@dataclass
class DetectionSchedule:
    epochs: int  # 1x schedule
    lr_steps: tuple[int, ...]  # epochs after which lr *= lr_gamma
    lr_gamma: float
    warmup_iters: int  # linear warm-up (mmdet's 1x default)
    warmup_ratio: float


@dataclass
class DetectionRecipe:
    model: TaskModel
    backbone: TaskBackbone
    head: DetectionHead
    data: DetectionData  # batch_size per process; the paper's total is 16 (8 GPUs x 2)
    optim: TaskOptim  # lr for the total batch of 16
    schedule: DetectionSchedule
    run: EpochRun

    def describe(self) -> str:
        """Image scale and head sizes, for the run's header."""
        data, head = self.data, self.head
        return (f"  data: images resized to shorter side {data.min_size} (longer <= "
                f"{data.max_size}) for training and evaluation; heads: FPN "
                f"{head.fpn_channels}, box {head.box_dim}, mask {head.mask_channels} "
                f"channels, {head.rois_per_image} RoIs/image, {head.rpn_proposals_train} "
                f"proposals (small data or CPU: --config {SMALL_RECIPE})")

    def validate(self) -> None:
        """Raise ConfigError for values the run cannot use."""
        check_task_keys(self)
        check_positive(self, ("schedule.epochs", "data.min_size", "data.max_size",
                              "run.eval_every", "head.fpn_channels", "head.box_dim",
                              "head.mask_channels", "head.rois_per_image",
                              "head.rpn_proposals_train", "head.rpn_proposals_test"))
        if self.data.min_size < 32 or self.data.max_size < self.data.min_size:
            raise ConfigError(f"need 32 <= data.min_size <= data.max_size, got "
                              f"{self.data.min_size}, {self.data.max_size}")
        steps = self.schedule.lr_steps
        if list(steps) != sorted(steps) or any(s <= 0 for s in steps):
            raise ConfigError(f"schedule.lr_steps must be increasing positive epochs, "
                              f"got {steps}")
        if not 0 < self.schedule.warmup_ratio <= 1:
            raise ConfigError(f"schedule.warmup_ratio must be in (0, 1], "
                              f"got {self.schedule.warmup_ratio}")
