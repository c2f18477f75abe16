"""The FreiHAND hand-mesh training recipe: its keys, their types and their checks.

The paper fixes only the model: an MA36 backbone and a simple regression head
for a weak-perspective camera and MANO pose/shape. The optimizer, schedule,
augmentation and loss weights of the packaged YAML (``fastvit/configs/tasks/
hand_fastvit_ma36_freihand.yaml``) are our choices, stated as such: AdamW with
the paper's dense-task lr/wd (2e-4, 1e-4), cosine decay with warm-up,
HMR-style iterative regression (3 steps), the usual hand-mesh augmentation
(scale, in-plane rotation, shift, colour) and L1 losses on 3D joints/vertices
and 2D keypoints plus L2 on MANO parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.errors import ConfigError
from fastvit.run.recipes import check_task_keys

DEFAULT_RECIPE = "hand_fastvit_ma36_freihand"  # packaged in fastvit/configs/tasks/


@dataclass
class HandRecipe:
    # model
    model: str
    pretrained: str | None  # ImageNet checkpoint, any layout fastvit loads
    input_size: int  # FreiHAND images are 224 x 224 (multiple of 32)
    drop_path_rate: float
    frozen_stages: int
    norm_eval: bool  # batches of 32+ crops: BN statistics can adapt
    head_hidden: int
    head_iterations: int  # iterative error feedback steps (HMR)
    head_dropout: float
    camera_scale_init: float  # ~ 2 f / (S z) for FreiHAND's f ~ 480 px, z ~ 0.7 m
    # MANO (FreiHAND conventions, see mano.py)
    flat_hand_mean: bool
    fingertip_vertex_ids: tuple[int, ...]
    root_joint: int  # middle-finger MCP, FreiHAND's reference joint
    # data
    versions: tuple[int, ...]  # the four training backgrounds
    aug_scale: float
    aug_rotation: float  # degrees
    aug_translate: float
    aug_color: float
    # optimization
    epochs: int
    batch_size: int  # per process; 4 GPUs -> 128
    lr: float
    weight_decay: float
    warmup_iters: int
    warmup_ratio: float
    min_lr_ratio: float  # cosine decays to lr * min_lr_ratio
    clip_grad: float | None
    # loss weights (3D terms are L1 in metres, 2D in [-1, 1] image units)
    w_joints_3d: float
    w_vertices_3d: float
    w_joints_2d: float
    w_pose: float
    w_shape: float
    # bookkeeping
    amp: str  # auto | none | bf16 | fp16
    workers: int
    keep_last: int  # newest ckpt_step*.pt kept
    deterministic: bool  # deterministic kernels (bit-exact resume on GPU)
    seed: int
    eval_every_epochs: int
    log_every: int

    def validate(self) -> None:
        """Raise ConfigError for values the run cannot use."""
        check_task_keys(self)
        for name in ("epochs", "batch_size", "lr", "input_size", "head_hidden",
                     "head_iterations", "camera_scale_init", "log_every", "eval_every_epochs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.input_size % 32:
            raise ConfigError(f"input_size must be a multiple of 32, got {self.input_size}")
        if not 0 <= self.root_joint < 21:
            raise ConfigError(f"root_joint must be a FreiHAND keypoint index 0..20, "
                             f"got {self.root_joint}")
        if len(self.fingertip_vertex_ids) != 5:
            raise ConfigError("fingertip_vertex_ids needs 5 vertex indices (thumb, index, "
                             "middle, ring, little)")
        weights = (self.w_joints_3d, self.w_vertices_3d, self.w_joints_2d, self.w_pose,
                   self.w_shape, self.aug_scale, self.aug_rotation, self.aug_translate,
                   self.aug_color, self.weight_decay)
        if any(w < 0 for w in weights):
            raise ConfigError("loss weights, augmentation strengths and weight_decay must be "
                             ">= 0")
        if not 0 <= self.aug_scale < 1:
            raise ConfigError(f"aug_scale must be in [0, 1), got {self.aug_scale}")
        if not 0 < self.warmup_ratio <= 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("warmup_ratio must be in (0, 1] and min_lr_ratio in [0, 1]")
