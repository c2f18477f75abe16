"""FreiHAND benchmark metrics: PA-MPJPE, PA-MPVPE and F-scores at 5 mm / 15 mm.

These follow the official scoring script (``eval.py`` of the FreiHAND toolbox):

* alignment (``align_w_scale``): both point sets are centred and scaled to unit
  Frobenius norm, the orthogonal Procrustes problem is solved by SVD
  (``scipy.linalg.orthogonal_procrustes``: the best *orthogonal* matrix, so a
  reflection is allowed) and the prediction is mapped onto the ground truth by
  that rotation, the optimal scale and the ground truth's centroid. Joints and
  vertices are aligned independently. ``allow_reflection=False`` gives the
  proper-rotation (Umeyama/Kabsch) variant some papers use; for real hands the
  two agree because a mirrored fit is never the better one.
* PA-MPJPE / PA-MPVPE: mean Euclidean distance after alignment, averaged over
  the 21 joints / 778 vertices and all samples (reported in mm).
* F@d on the aligned mesh: for each prediction vertex the distance to the
  nearest ground-truth vertex and vice versa; precision and recall are the
  fractions strictly below ``d``; F = 2PR / (P + R) per sample, then averaged.

The only deviation: the script adds 1e-8 m to each norm; we only guard against
a zero norm, so an exact similarity copy scores 0 to float64 precision.
"""

from __future__ import annotations

import torch

F_THRESHOLDS_M = (0.005, 0.015)  # 5 mm and 15 mm


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor, *,
                     allow_reflection: bool = True) -> torch.Tensor:
    """Similarity-align ``pred`` (B, N, 3) to ``gt`` (B, N, 3); returns aligned pred."""
    if pred.shape != gt.shape or pred.dim() != 3 or pred.shape[-1] != 3:
        raise ValueError(f"expected two (B, N, 3) tensors, got {tuple(pred.shape)} and "
                         f"{tuple(gt.shape)}")
    pred64, gt64 = pred.double(), gt.double()
    mu_gt, mu_pred = gt64.mean(1, keepdim=True), pred64.mean(1, keepdim=True)
    a, b = gt64 - mu_gt, pred64 - mu_pred
    norm_a = a.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    norm_b = b.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    a, b = a / norm_a, b / norm_b
    # orthogonal Procrustes: R = argmin ||a R - b||, from svd(a^T b) = U S V^T, R = U V^T
    u, s, vh = torch.linalg.svd(a.transpose(1, 2) @ b)
    if not allow_reflection:
        sign = torch.sign(torch.linalg.det(u @ vh))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        fix = torch.ones_like(s)
        fix[:, -1] = sign
        u, s = u * fix[:, None, :], s * fix
    rot = u @ vh
    scale = s.sum(1)[:, None, None]
    aligned = (b @ rot.transpose(1, 2)) * scale * norm_a + mu_gt
    return aligned.to(pred.dtype)


def mean_point_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-sample mean Euclidean distance (B,) between (B, N, 3) sets."""
    return (pred.double() - gt.double()).norm(dim=-1).mean(-1)


def f_score(pred: torch.Tensor, gt: torch.Tensor, threshold: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (F, precision, recall) of point sets (B, N, 3) / (B, M, 3) at ``threshold``.

    Precision: fraction of predicted points whose nearest ground-truth point is
    closer than ``threshold``; recall: the converse.
    """
    # exact differences (not the |a|^2 + |b|^2 - 2ab shortcut): thresholds compare exactly
    dist = torch.cdist(pred.double(), gt.double(),
                       compute_mode="donot_use_mm_for_euclid_dist")  # (B, N, M)
    precision = (dist.min(dim=2).values < threshold).double().mean(1)
    recall = (dist.min(dim=1).values < threshold).double().mean(1)
    denom = precision + recall
    f = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12),
                    torch.zeros_like(denom))
    return f, precision, recall


def pa_errors(pred: torch.Tensor, gt: torch.Tensor, *, allow_reflection: bool = True
              ) -> torch.Tensor:
    """Per-sample Procrustes-aligned mean error (B,), in the input unit."""
    return mean_point_error(procrustes_align(pred, gt, allow_reflection=allow_reflection), gt)


def sample_metrics(pred_joints: torch.Tensor, gt_joints: torch.Tensor,
                   pred_verts: torch.Tensor, gt_verts: torch.Tensor, *,
                   root: int = 9) -> dict[str, torch.Tensor]:
    """Per-sample benchmark numbers (B,) in millimetres (inputs in metres)."""
    aligned_verts = procrustes_align(pred_verts, gt_verts)
    out = {
        "pa_mpjpe_mm": pa_errors(pred_joints, gt_joints) * 1000.0,
        "pa_mpvpe_mm": mean_point_error(aligned_verts, gt_verts) * 1000.0,
        # root-relative, no alignment: shows what Procrustes hides (global rotation/scale)
        "rr_mpjpe_mm": mean_point_error(pred_joints - pred_joints[:, root:root + 1],
                                        gt_joints - gt_joints[:, root:root + 1]) * 1000.0,
    }
    for t in F_THRESHOLDS_M:
        out[f"f@{round(t * 1000)}mm"] = f_score(aligned_verts, gt_verts, t)[0]
    return out


class HandMeshMeter:
    """Accumulates per-sample metrics; ``all_reduce`` makes it exact under DDP."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def update(self, per_sample: dict[str, torch.Tensor]) -> None:
        n = None
        for key, values in per_sample.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(values.double().sum())
            n = values.numel()
        self.count += int(n or 0)

    def all_reduce(self, device: torch.device | str = "cpu") -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        keys = sorted(self.sums)
        t = torch.tensor([self.sums[k] for k in keys] + [float(self.count)],
                         dtype=torch.float64, device=device)
        dist.all_reduce(t)
        self.sums = {k: float(v) for k, v in zip(keys, t[:-1].tolist(), strict=True)}
        self.count = int(t[-1].item())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no samples were evaluated")
        out = {k: v / self.count for k, v in self.sums.items()}
        out["num_samples"] = self.count
        return out
