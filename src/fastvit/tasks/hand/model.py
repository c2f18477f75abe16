"""FastViT backbone + iterative regression head for MANO pose/shape and a camera.

The network regresses 61 numbers per image: 48 MANO pose values (axis-angle,
the FreiHAND parameterization, so ground-truth parameters supervise it
directly), 10 shape values and a weak-perspective camera (log-scale, tx, ty).
As in HMR the head starts from the mean parameters (the MANO mean pose, mean
shape, a typical camera) and refines them in a few steps, each step seeing
the pooled image feature and the current estimate. MANO itself
(:class:`~fastvit.tasks.hand.mano.ManoLayer`) is not part of the network: it
has no trainable weights, and keeping the licensed model arrays out of
checkpoints means a checkpoint can be shared without the MANO licence terms
attaching to it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastvit.tasks.backbone import FastVitBackbone
from fastvit.tasks.hand.mano import NUM_BETAS, NUM_POSE, ManoLayer

NUM_CAMERA = 3
NUM_PARAMS = NUM_POSE + NUM_BETAS + NUM_CAMERA


class IterativeRegressor(nn.Module):
    """HMR-style iterative error feedback: params += MLP([feature, params])."""

    def __init__(self, in_features: int, hidden: int = 1024, iterations: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.iterations = iterations
        self.mlp = nn.Sequential(
            nn.Linear(in_features + NUM_PARAMS, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, NUM_PARAMS))
        # Start at the mean estimate with small updates (HMR initialises the same way).
        nn.init.xavier_uniform_(self.mlp[-1].weight, gain=0.01)
        nn.init.zeros_(self.mlp[-1].bias)
        self.register_buffer("init_params", torch.zeros(NUM_PARAMS))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        params = self.init_params.expand(feature.shape[0], -1)
        for _ in range(self.iterations):
            params = params + self.mlp(torch.cat([feature, params], dim=1))
        return params


class HandMeshNet(nn.Module):
    """Image (B, 3, S, S) -> dict(pose (B, 48), shape (B, 10), camera (B, 3) = s, tx, ty)."""

    def __init__(self, variant: str, checkpoint: str | Path | dict | None = None, *,
                 hidden: int = 1024, iterations: int = 3, dropout: float = 0.0,
                 camera_scale_init: float = 6.0, frozen_stages: int = -1,
                 norm_eval: bool = False, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = FastVitBackbone(variant, checkpoint, frozen_stages=frozen_stages,
                                        norm_eval=norm_eval, out_indices=(3,),
                                        drop_path_rate=drop_path_rate)
        self.head = IterativeRegressor(self.backbone.channels[-1], hidden, iterations, dropout)
        self.camera_scale_init = float(camera_scale_init)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = self.backbone(images)["3"].mean((2, 3))  # stride-32 map, global pool
        params = self.head(feature.float())
        pose, shape, cam = params.split([NUM_POSE, NUM_BETAS, NUM_CAMERA], dim=1)
        scale = self.camera_scale_init * cam[:, :1].clamp(-10.0, 10.0).exp()
        return {"pose": pose, "shape": shape, "camera": torch.cat([scale, cam[:, 1:]], 1)}


def decode_mesh(params: dict[str, torch.Tensor], mano: ManoLayer, root: int = 9
                ) -> dict[str, torch.Tensor]:
    """Run MANO (in fp32, outside autocast) and project with the weak-perspective camera.

    Adds ``vertices`` (B, V, 3) and ``joints_3d`` (B, 21, 3), both relative to joint
    ``root`` (metres), and ``joints_2d`` / ``vertices_2d`` in [-1, 1] image units.
    """
    pose, shape, cam = params["pose"].float(), params["shape"].float(), params["camera"].float()
    with torch.autocast(pose.device.type, enabled=False):
        verts, joints = mano(pose, shape)
    origin = joints[:, root:root + 1]
    verts, joints = verts - origin, joints - origin
    s, t = cam[:, None, :1], cam[:, None, 1:]
    return {**params, "vertices": verts, "joints_3d": joints,
            "joints_2d": s * joints[..., :2] + t, "vertices_2d": s * verts[..., :2] + t}
