"""The learning-rate schedule of every trainer: warmup, a main phase, a constant tail.

One mechanism for all four tasks, stepped once per optimizer step:
``torch.optim.lr_scheduler.LambdaLR`` driven by an :class:`LrSchedule`, a plain
object of numbers (so ``LambdaLR.state_dict()`` stays ``weights_only``-loadable
and a resumed run recomputes the same values). The multiplier of the peak lr at
step ``t`` is ``warmup(t) * main(t)``:

* warmup: linear from ``warmup_start`` to 1 over ``warmup_steps`` (1 afterwards);
  mmcv's linear warmup, and timm's warmup from ``warmup_lr`` when
  ``warmup_start = warmup_lr / lr``;
* main phase, starting at step ``main_start`` (0: the warmup overlaps it, as in
  mmdet/mmseg; ``warmup_steps``: it follows the warmup, as in timm):
  ``cosine`` to ``min_ratio`` over ``main_steps``, ``poly`` ``(1 - u/main_steps)^power``,
  ``step`` (x ``gamma`` at each of ``milestones``) or ``constant``;
* after ``main_start + main_steps`` the multiplier stays where the main phase ended
  (the classification cooldown at ``min_lr``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

MAIN_PHASES = ("cosine", "poly", "step", "constant")


@dataclass
class LrSchedule:
    """The lr multiplier at optimizer step ``t`` (0-based); see the module docstring."""

    main: str = "constant"
    main_steps: int = 1
    main_start: int = 0
    warmup_steps: int = 0
    warmup_start: float = 1.0
    min_ratio: float = 0.0  # cosine: the multiplier it ends at
    power: float = 1.0  # poly exponent
    milestones: tuple[int, ...] = ()  # step: the steps from which lr is x gamma once more
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.main not in MAIN_PHASES:
            raise ValueError(f"main phase must be one of {MAIN_PHASES}, got {self.main!r}")
        self.milestones = tuple(sorted(self.milestones))

    def warmup(self, step: int) -> float:
        if step >= self.warmup_steps:
            return 1.0
        return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps

    def main_phase(self, step: int) -> float:
        if self.main == "step":
            return self.gamma ** bisect.bisect_right(self.milestones, step)
        if self.main == "constant":
            return 1.0
        steps = max(self.main_steps, 1)
        done = min(max(step - self.main_start, 0), steps) / steps
        if self.main == "poly":
            return (1.0 - done) ** self.power
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * done))

    def __call__(self, step: int) -> float:
        return self.warmup(step) * self.main_phase(step)


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: LrSchedule) -> LambdaLR:
    """``schedule`` applied to every parameter group's lr (its peak); call ``step()``
    after every optimizer step."""
    return LambdaLR(optimizer, schedule)
