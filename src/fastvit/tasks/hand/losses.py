"""Training losses for the hand-mesh regressor.

* 3D joints and vertices: L1 on root-relative coordinates (metres), so the
  losses do not depend on the absolute depth a weak-perspective model cannot see;
* 2D joints: L1 between the weak-perspective projection of the predicted joints
  and the ground-truth keypoints (``K @ xyz``, carried through the augmentation),
  both in [-1, 1] image units;
* MANO parameters: L2 on the 48 pose and 10 shape values where the sample has
  them (``has_mano``).

Each term is multiplied by its recipe weight; ``loss`` is the weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    joints_3d: float = 100.0
    vertices_3d: float = 100.0
    joints_2d: float = 10.0
    pose: float = 1.0
    shape: float = 0.1


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum() / mask.sum().clamp_min(1.0)


def hand_mesh_loss(pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                   weights: LossWeights, root: int = 9) -> dict[str, torch.Tensor]:
    """Named weighted losses plus their sum under ``"loss"``.

    ``pred`` comes from :func:`~fastvit.tasks.hand.model.decode_mesh` (already
    root-relative); ``batch`` from :class:`~fastvit.tasks.hand.data.FreiHandDataset`.
    """
    gt_joints = batch["joints_3d"].float()
    gt_origin = gt_joints[:, root:root + 1]
    has_3d = batch["has_3d"]
    has_mano = batch["has_mano"]
    terms: dict[str, torch.Tensor] = {}
    per = (pred["joints_3d"] - (gt_joints - gt_origin)).abs().flatten(1).mean(1)
    terms["joints_3d"] = _masked_mean(per, has_3d)
    if "vertices" in batch:
        gt_verts = batch["vertices"].float() - gt_origin
        per = (pred["vertices"] - gt_verts).abs().flatten(1).mean(1)
        terms["vertices_3d"] = _masked_mean(per, has_3d)
    per = (pred["joints_2d"] - batch["joints_2d"].float()).abs().flatten(1).mean(1)
    terms["joints_2d"] = _masked_mean(per, has_3d)
    per = F.mse_loss(pred["pose"].float(), batch["pose"].float(), reduction="none").mean(1)
    terms["pose"] = _masked_mean(per, has_mano)
    per = F.mse_loss(pred["shape"].float(), batch["shape"].float(), reduction="none").mean(1)
    terms["shape"] = _masked_mean(per, has_mano)
    out = {name: getattr(weights, name) * value for name, value in terms.items()}
    out["loss"] = torch.stack(list(out.values())).sum()
    return out
