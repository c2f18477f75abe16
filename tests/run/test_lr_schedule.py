"""The one lr schedule mechanism gives each task the learning rates of its reference
recipe: every expected value below is computed from the formula it follows (timm,
mmdet, mmseg), and for detection and segmentation also by the torch schedulers the
tasks chained before (``LinearLR`` x ``MultiStepLR`` / ``PolynomialLR``)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, MultiStepLR, PolynomialLR

from fastvit.run.distributed import DistEnv
from fastvit.run.lr_schedule import LrSchedule, lr_scheduler
from fastvit.run.recipes import apply_overrides, load_recipe
from fastvit.tasks.detection import engine as det_engine
from fastvit.tasks.detection.recipe import DEFAULT_RECIPE as DET_RECIPE
from fastvit.tasks.detection.recipe import DetectionRecipe
from fastvit.tasks.hand import engine as hand_engine
from fastvit.tasks.hand.recipe import DEFAULT_RECIPE as HAND_RECIPE
from fastvit.tasks.hand.recipe import HandRecipe
from fastvit.tasks.recipes import load_task_recipe
from fastvit.tasks.segmentation import engine as seg_engine
from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE as SEG_RECIPE
from fastvit.tasks.segmentation.recipe import SegmentationRecipe
from fastvit.train.config import TrainConfig
from fastvit.train.plan import make_plan

LR = 2e-4


def _optimizer(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(
        torch.zeros(1))], lr=lr)


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """The lr each of ``steps`` optimizer steps uses (every group the same)."""
    seen = []
    for _ in range(steps):
        assert len({g["lr"] for g in optimizer.param_groups}) == 1
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def _run(schedule: LrSchedule, steps: int, lr: float = LR) -> list[float]:
    opt = _optimizer(lr)
    return _lrs(opt, lr_scheduler(opt, schedule), steps)


def test_classification_warmup_cosine_cooldown():
    """timm: linear from warmup_lr over the warmup epochs, cosine to min_lr, then min_lr."""
    cfg = apply_overrides(load_recipe(TrainConfig, "fastvit_t8"), [
        "schedule.epochs=20", "schedule.warmup_epochs=2", "schedule.cooldown_epochs=3",
        "schedule.warmup_lr=1e-6", "schedule.min_lr=1e-5", "optim.lr=1e-3",
        "data.batch_size=10", "optim.global_batch=null"])
    plan = make_plan(cfg, DistEnv(), 100)  # 10 steps per epoch
    assert (plan.warmup_steps, plan.cosine_steps, plan.total_steps) == (20, 150, 200)
    lrs = _run(plan.lr_schedule(1e-6, 1e-5), 200, plan.lr)
    warm, peak, low = 1e-6, 1e-3, 1e-5

    def expected(t: int) -> float:
        if t < 20:
            return warm + (peak - warm) * t / 20
        if t < 170:
            return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * (t - 20) / 150))
        return low

    for t in (0, 1, 10, 19, 20, 21, 57, 95, 133, 169, 170, 185, 199):
        assert lrs[t] == pytest.approx(expected(t), rel=1e-12, abs=1e-18), t
    assert lrs[20] == pytest.approx(peak, rel=1e-12) and lrs[95] == pytest.approx(
        (peak + low) / 2, rel=1e-12)


def test_detection_linear_warmup_into_step_decay():
    """mmdet 1x: lr x (ratio + (1 - ratio) t / warmup) during warmup, x gamma after each
    step epoch; the same values as the torch schedulers it replaced."""
    recipe = load_task_recipe(DetectionRecipe, DET_RECIPE, values={
        "optim.lr": LR, "schedule.warmup_iters": 6, "schedule.warmup_ratio": 0.001,
        "schedule.lr_steps": (2, 3), "schedule.lr_gamma": 0.1, "schedule.epochs": 4})
    per_epoch, total = 4, 16
    lrs = _run(det_engine.lr_schedule(recipe, per_epoch, total), total)

    def expected(t: int) -> float:
        warm = 0.001 + (1 - 0.001) * t / 6 if t < 6 else 1.0
        return LR * warm * 0.1 ** sum(t >= e * per_epoch for e in (2, 3))

    assert lrs == pytest.approx([expected(t) for t in range(total)], rel=1e-12)
    assert lrs[0] == pytest.approx(LR * 0.001) and lrs[15] == pytest.approx(LR * 0.01)
    opt = _optimizer()
    chained = ChainedScheduler([MultiStepLR(opt, [8, 12], 0.1),
                                LinearLR(opt, start_factor=0.001, total_iters=6)], opt)
    assert lrs == pytest.approx(_lrs(opt, chained, total), rel=1e-9)


def test_detection_warmup_is_cut_to_a_short_run():
    recipe = load_task_recipe(DetectionRecipe, DET_RECIPE, values={"schedule.warmup_iters": 500})
    assert det_engine.lr_schedule(recipe, 2, 8).warmup_steps == 8


def test_segmentation_linear_warmup_into_poly_decay():
    """mmseg: (1 - t / iters) ** power to 0, times the linear warmup."""
    recipe = load_task_recipe(SegmentationRecipe, SEG_RECIPE, values={
        "optim.lr": LR, "schedule.iters": 20, "schedule.warmup_iters": 5,
        "schedule.warmup_ratio": 1e-6, "schedule.poly_power": 0.9})
    lrs = _run(seg_engine.lr_schedule(recipe, 20), 24)

    def expected(t: int) -> float:
        warm = 1e-6 + (1 - 1e-6) * t / 5 if t < 5 else 1.0
        return LR * warm * (1 - min(t, 20) / 20) ** 0.9

    assert lrs == pytest.approx([expected(t) for t in range(24)], rel=1e-12, abs=1e-20)
    assert lrs[20:] == [0.0] * 4
    opt = _optimizer()
    chained = ChainedScheduler([PolynomialLR(opt, total_iters=20, power=0.9),
                                LinearLR(opt, start_factor=1e-6, total_iters=5)], opt)
    assert lrs == pytest.approx(_lrs(opt, chained, 24), rel=1e-9, abs=1e-20)


def test_hand_linear_warmup_into_cosine_to_min_ratio():
    """Cosine over the whole run to ``min_lr_ratio`` x lr, times the linear warmup (at
    most half the run)."""
    recipe = load_task_recipe(HandRecipe, HAND_RECIPE, values={
        "optim.lr": LR, "schedule.warmup_iters": 4, "schedule.warmup_ratio": 0.01,
        "schedule.min_lr_ratio": 0.05})
    total = 30
    lrs = _run(hand_engine.lr_schedule(recipe, total), total + 3)

    def expected(t: int) -> float:
        warm = 0.01 + (1 - 0.01) * t / 4 if t < 4 else 1.0
        cos = 0.05 + (1 - 0.05) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
        return LR * warm * cos

    assert lrs == pytest.approx([expected(t) for t in range(total + 3)], rel=1e-12)
    assert lrs[-1] == pytest.approx(LR * 0.05, rel=1e-12)
    assert hand_engine.lr_schedule(recipe, 6).warmup_steps == 3


def test_the_state_is_plain_numbers_and_resumes_the_same_values():
    """``weights_only`` loading of a checkpoint's scheduler state, and a scheduler rebuilt
    from it continues with the same learning rates."""
    schedule = LrSchedule("step", warmup_steps=3, warmup_start=0.1, milestones=(5, 7))
    opt = _optimizer()
    scheduler = lr_scheduler(opt, schedule)
    _lrs(opt, scheduler, 4)
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    rest = _lrs(opt, scheduler, 6)
    again = _optimizer()  # as a resumed run: built fresh, then the checkpoint's state
    resumed = lr_scheduler(again, LrSchedule("step", warmup_steps=3, warmup_start=0.1,
                                             milestones=(5, 7)))
    again.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    assert _lrs(again, resumed, 6) == rest


def test_an_unknown_main_phase_is_refused():
    with pytest.raises(ValueError, match="main phase must be one of"):
        LrSchedule("linear")
