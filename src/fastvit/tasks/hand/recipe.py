"""The FreiHAND hand-mesh training recipe: its keys, their types and their checks.

The paper fixes only the model: an MA36 backbone and a simple regression head
for a weak-perspective camera and MANO pose/shape. The optimizer, schedule,
augmentation and loss weights of the packaged YAML (``fastvit/configs/tasks/
hand_fastvit_ma36_freihand.yaml``) are our choices, stated as such: AdamW with
the paper's dense-task lr/wd (2e-4, 1e-4), cosine decay with warm-up,
HMR-style iterative regression (3 steps), the usual hand-mesh augmentation
(scale, in-plane rotation, shift, colour) and L1 losses on 3D joints/vertices
and 2D keypoints plus L2 on MANO parameters. The shared sections (``model``,
``backbone``, ``optim``, ``run``) are those of every trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.errors import ConfigError
from fastvit.run.recipes import check_positive, check_task_keys
from fastvit.tasks.recipes import EpochRun, TaskBackbone, TaskData, TaskModel, TaskOptim

DEFAULT_RECIPE = "hand_fastvit_ma36_freihand"  # packaged in fastvit/configs/tasks/


@dataclass
class HandHead:
    hidden: int
    iterations: int  # iterative error feedback steps (HMR)
    dropout: float
    camera_scale_init: float  # ~ 2 f / (S z) for FreiHAND's f ~ 480 px, z ~ 0.7 m


@dataclass
class HandMano:
    """FreiHAND's MANO conventions (see :mod:`fastvit.tasks.hand.mano`)."""

    flat_hand_mean: bool
    fingertip_vertex_ids: tuple[int, ...]
    root_joint: int  # middle-finger MCP, FreiHAND's reference joint


@dataclass
class HandData(TaskData):
    image_size: int  # square input side; FreiHAND images are 224 x 224 (multiple of 32)
    versions: tuple[int, ...]  # the four training backgrounds


@dataclass
class HandAugment:
    scale: float
    rotation: float  # degrees
    translate: float
    color: float


@dataclass
class HandLoss:
    """Weights of the loss terms (3D terms are L1 in metres, 2D in [-1, 1] image units)."""

    joints_3d: float
    vertices_3d: float
    joints_2d: float
    pose: float
    shape: float


@dataclass
class HandSchedule:
    epochs: int
    warmup_iters: int
    warmup_ratio: float
    min_lr_ratio: float  # cosine decays to lr * min_lr_ratio


@dataclass
class HandRecipe:
    model: TaskModel
    backbone: TaskBackbone
    head: HandHead
    mano: HandMano
    data: HandData  # batch_size per process; 4 GPUs -> 128
    augment: HandAugment
    loss: HandLoss
    optim: TaskOptim
    schedule: HandSchedule
    run: EpochRun

    def validate(self) -> None:
        """Raise ConfigError for values the run cannot use."""
        check_task_keys(self)
        check_positive(self, ("schedule.epochs", "data.image_size", "head.hidden",
                              "head.iterations", "head.camera_scale_init", "run.eval_every"))
        if self.data.image_size % 32:
            raise ConfigError(f"data.image_size must be a multiple of 32, "
                              f"got {self.data.image_size}")
        if not 0 <= self.mano.root_joint < 21:
            raise ConfigError(f"mano.root_joint must be a FreiHAND keypoint index 0..20, "
                              f"got {self.mano.root_joint}")
        if len(self.mano.fingertip_vertex_ids) != 5:
            raise ConfigError("mano.fingertip_vertex_ids needs 5 vertex indices (thumb, index, "
                              "middle, ring, little)")
        loss, aug = self.loss, self.augment
        if any(w < 0 for w in (loss.joints_3d, loss.vertices_3d, loss.joints_2d, loss.pose,
                               loss.shape, aug.rotation, aug.translate, aug.color)):
            raise ConfigError("loss weights and augmentation strengths must be >= 0")
        if not 0 <= aug.scale < 1:
            raise ConfigError(f"augment.scale must be in [0, 1), got {aug.scale}")
        if not 0 < self.schedule.warmup_ratio <= 1 or not 0 <= self.schedule.min_lr_ratio <= 1:
            raise ConfigError("schedule.warmup_ratio must be in (0, 1] and "
                              "schedule.min_lr_ratio in [0, 1]")

