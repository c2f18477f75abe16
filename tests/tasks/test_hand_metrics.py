"""FreiHAND 3D hand mesh metrics (Procrustes-aligned errors, F-scores) on cases computed
by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fastvit.tasks.hand.metrics import (
    HandMeshMeter,
    f_score,
    pa_errors,
    procrustes_align,
    sample_metrics,
)
from tests.helpers.hand import random_rotation


@pytest.mark.parametrize("allow_reflection", [True, False])
def test_pa_error_is_zero_for_a_similarity_copy(allow_reflection):
    gt = torch.randn(4, 778, 3, dtype=torch.float64) * 0.05           # metres
    rot = torch.stack([random_rotation(s) for s in range(4)])
    pred = 1.7 * gt @ rot.transpose(1, 2) + torch.tensor([0.1, -0.2, 0.6], dtype=torch.float64)
    err_mm = pa_errors(pred, gt, allow_reflection=allow_reflection) * 1000
    assert err_mm.abs().max() < 1e-6
    joints_mm = pa_errors(pred[:, :21], gt[:, :21], allow_reflection=allow_reflection) * 1000
    assert joints_mm.abs().max() < 1e-6


def test_reflection_handling():
    """The benchmark's orthogonal Procrustes undoes a mirror image; the proper-rotation
    variant cannot, and leaves a large error on a non-planar set."""
    gt = torch.randn(2, 50, 3, dtype=torch.float64) * 0.05
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert pa_errors(mirrored, gt, allow_reflection=True).max() * 1000 < 1e-6
    assert pa_errors(mirrored, gt, allow_reflection=False).min() * 1000 > 10.0


def test_pa_error_of_a_known_perturbation():
    """Square of half-side a in the z=0 plane, corners pushed +-d out of plane as a
    saddle. The cross-covariance is diag(4a^2, 4a^2, 0), so the best rotation is the
    identity and only the scale c = 2a^2 / (2a^2 + d^2) helps: each corner ends
    |((c - 1) a, (c - 1) a, c d)| = d a sqrt(2 / (2 a^2 + d^2)) away."""
    a, d = 10.0, 1.0  # mm
    gt = torch.tensor([[a, a, 0], [-a, -a, 0], [a, -a, 0], [-a, a, 0]], dtype=torch.float64)
    pred = gt + torch.tensor([[0, 0, d], [0, 0, d], [0, 0, -d], [0, 0, -d]],
                             dtype=torch.float64)
    expected = d * a * math.sqrt(2.0 / (2 * a * a + d * d))            # 0.99751 mm
    rot = random_rotation(3)
    for allow in (True, False):   # also after moving the prediction rigidly away
        moved = (3.0 * pred @ rot.T + 5.0)[None]
        err = pa_errors(moved, gt[None], allow_reflection=allow)
        assert err.item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.99751, abs=1e-5)


def test_f_score_on_a_known_point_set():
    gt = torch.tensor([[0, 0, 0], [10, 0, 0], [20, 0, 0], [30, 0, 0]], dtype=torch.float64)
    pred = torch.tensor([[0, 0, 0], [10, 3, 0], [20, 0, 0], [30, 20, 0], [45, 0, 0]],
                        dtype=torch.float64)
    # nearest distances pred->gt: 0, 3, 0, 20, 15; gt->pred: 0, 3, 0, 10
    f, p, r = f_score(pred[None], gt[None], 5.0)
    assert (p.item(), r.item()) == (pytest.approx(3 / 5), pytest.approx(3 / 4))
    assert f.item() == pytest.approx(2 * 0.6 * 0.75 / 1.35)             # 2/3
    f15, p15, r15 = f_score(pred[None], gt[None], 15.0)                  # strict "<" as eval.py
    assert (p15.item(), r15.item()) == (pytest.approx(3 / 5), 1.0)
    assert f15.item() == pytest.approx(2 * 0.6 / 1.6)                   # 3/4
    f16, p16, r16 = f_score(pred[None], gt[None], 16.0)
    assert (p16.item(), r16.item()) == (pytest.approx(4 / 5), 1.0)
    assert f16.item() == pytest.approx(8 / 9)
    far = f_score(pred[None] + 1000, gt[None], 5.0)[0]
    assert far.item() == 0.0


def test_sample_metrics_and_meter():
    gt_v = torch.randn(3, 778, 3, dtype=torch.float64) * 0.04
    gt_j = torch.randn(3, 21, 3, dtype=torch.float64) * 0.04
    rot = random_rotation(7)
    m = sample_metrics(0.5 * gt_j @ rot.T + 1, gt_j, 0.5 * gt_v @ rot.T + 1, gt_v)
    assert m["pa_mpjpe_mm"].max() < 1e-6 and m["pa_mpvpe_mm"].max() < 1e-6
    assert m["f@5mm"].min() == 1.0 and m["f@15mm"].min() == 1.0
    meter = HandMeshMeter()
    meter.update({"x": torch.tensor([1.0, 2.0])})
    meter.update({"x": torch.tensor([6.0])})
    assert meter.compute() == {"x": 3.0, "num_samples": 3}


def test_procrustes_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected two"):
        procrustes_align(torch.zeros(1, 21, 3), torch.zeros(1, 20, 3))
