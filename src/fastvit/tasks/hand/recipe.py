"""The FreiHAND hand-mesh training recipe.

The paper (PAPER.md section 4) fixes only the model: an MA36 backbone and a
simple regression head for a weak-perspective camera and MANO pose/shape. The
optimizer, schedule, augmentation and loss weights below are our choices,
stated as such: AdamW with the paper's dense-task lr/wd (2e-4, 1e-4), cosine
decay with warm-up, HMR-style iterative regression (3 steps), the usual
hand-mesh augmentation (scale, in-plane rotation, shift, colour) and L1 losses
on 3D joints/vertices and 2D keypoints plus L2 on MANO parameters.
``configs/tasks/hand_fastvit_ma36_freihand.yaml`` spells the same values out
(a test keeps the two in sync); command-line options override either.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.model import VARIANTS
from fastvit.tasks.hand.mano import FREIHAND_FINGERTIPS


@dataclass(frozen=True)
class HandRecipe:
    # model
    model: str = "fastvit_ma36"
    pretrained: str | None = None       # ImageNet checkpoint, any layout fastvit loads
    input_size: int = 224               # FreiHAND images are 224 x 224 (multiple of 32)
    drop_path_rate: float = 0.1
    frozen_stages: int = -1
    norm_eval: bool = False             # batches of 32+ crops: BN statistics can adapt
    head_hidden: int = 1024
    head_iterations: int = 3            # iterative error feedback steps (HMR)
    head_dropout: float = 0.0
    camera_scale_init: float = 6.0      # ~ 2 f / (S z) for FreiHAND's f ~ 480 px, z ~ 0.7 m
    # MANO (FreiHAND conventions, see mano.py)
    flat_hand_mean: bool = False
    fingertip_vertex_ids: tuple[int, ...] = FREIHAND_FINGERTIPS
    root_joint: int = 9                 # middle-finger MCP, FreiHAND's reference joint
    # data
    versions: tuple[int, ...] = (0, 1, 2, 3)  # the four training backgrounds
    aug_scale: float = 0.2
    aug_rotation: float = 30.0          # degrees
    aug_translate: float = 0.1
    aug_color: float = 0.3
    # optimization
    epochs: int = 60
    batch_size: int = 32                # per process; 4 GPUs -> 128
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_iters: int = 1000
    warmup_ratio: float = 0.001
    min_lr_ratio: float = 0.01          # cosine decays to lr * min_lr_ratio
    clip_grad: float | None = None
    # loss weights (3D terms are L1 in metres, 2D in [-1, 1] image units)
    w_joints_3d: float = 100.0
    w_vertices_3d: float = 100.0
    w_joints_2d: float = 10.0
    w_pose: float = 1.0
    w_shape: float = 0.1
    # bookkeeping
    amp: bool = False
    workers: int = 8
    seed: int = 0
    eval_every_epochs: int = 5
    log_every: int = 20

    def __post_init__(self) -> None:
        if self.model not in VARIANTS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(VARIANTS)}")
        for name in ("epochs", "batch_size", "lr", "input_size", "head_hidden",
                     "head_iterations", "camera_scale_init", "log_every", "eval_every_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size}")
        if not 0 <= self.root_joint < 21:
            raise ValueError(f"root_joint must be a FreiHAND keypoint index 0..20, "
                             f"got {self.root_joint}")
        if len(self.fingertip_vertex_ids) != 5:
            raise ValueError("fingertip_vertex_ids needs 5 vertex indices (thumb, index, "
                             "middle, ring, little)")
        weights = (self.w_joints_3d, self.w_vertices_3d, self.w_joints_2d, self.w_pose,
                   self.w_shape, self.aug_scale, self.aug_rotation, self.aug_translate,
                   self.aug_color, self.weight_decay)
        if any(w < 0 for w in weights):
            raise ValueError("loss weights, augmentation strengths and weight_decay must be "
                             ">= 0")
        if not 0 <= self.aug_scale < 1:
            raise ValueError(f"aug_scale must be in [0, 1), got {self.aug_scale}")
        if not 0 < self.warmup_ratio <= 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("warmup_ratio must be in (0, 1] and min_lr_ratio in [0, 1]")
