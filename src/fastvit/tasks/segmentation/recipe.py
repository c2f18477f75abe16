"""The Semantic FPN training recipe: its keys, their types and their checks.

The values live in the packaged YAML ``fastvit/configs/tasks/
semfpn_fastvit_sa12_ade20k_40k.yaml`` (the paper's ADE20K setting); see
:mod:`fastvit.run.recipes` for how recipes are loaded and overridden. The shared
sections (``model``, ``backbone``, ``optim``, ``run``) are those of every trainer;
the run's length is ``schedule.iters`` (optimizer steps), not epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit.errors import ConfigError
from fastvit.run.recipes import check_positive, check_task_keys
from fastvit.tasks.recipes import TaskBackbone, TaskData, TaskModel, TaskOptim, TaskRun

DEFAULT_RECIPE = "semfpn_fastvit_sa12_ade20k_40k"  # packaged in fastvit/configs/tasks/


@dataclass
class SegmentationModel(TaskModel):
    num_classes: int  # ADE20K: 150; label 0 ("other") is ignored


@dataclass
class SegmentationData(TaskData):
    crop_size: int  # training crops (and sliding-window evaluation windows)
    base_size: int | None  # shorter side before random scaling / at test; None: crop_size
    scale_range: tuple[float, float]
    hflip: float
    photometric: bool


@dataclass
class SegmentationHead:
    fpn_channels: int
    channels: int  # the Semantic FPN head's convolutions
    norm: str  # "gn" or "bn" (SyncBatchNorm under DDP)
    dropout: float


@dataclass
class SegmentationSchedule:
    iters: int  # optimizer steps in all
    poly_power: float  # lr = base * (1 - t / iters) ** power
    warmup_iters: int
    warmup_ratio: float


@dataclass
class SegmentationEval:
    mode: str  # "whole" or "slide"
    stride: int  # sliding-window stride (window = data.crop_size)


@dataclass
class SegmentationRun(TaskRun):
    eval_every_iters: int  # iterations between evaluations; also the checkpoint interval


@dataclass
class SegmentationRecipe:
    model: SegmentationModel
    backbone: TaskBackbone
    head: SegmentationHead
    data: SegmentationData  # batch_size per process; the paper's total is 32 (8 GPUs x 4)
    optim: TaskOptim
    schedule: SegmentationSchedule
    eval: SegmentationEval
    run: SegmentationRun

    @property
    def scale(self) -> int:
        """The shorter image side the data is resized to: ``data.base_size``, else
        ``data.crop_size`` (so ``--crop-size 128`` does not enlarge 128-pixel images to
        ADE20K's 512)."""
        data = self.data
        return data.base_size if data.base_size is not None else data.crop_size

    def describe(self) -> str:
        """How the data is scaled, for the run's header."""
        lo, hi = self.data.scale_range
        origin = "--base-size" if self.data.base_size is not None else "= crop size"
        crop = self.data.crop_size
        return (f"  data: shorter side {self.scale} ({origin}) x U({lo:g}, {hi:g}), random "
                f"{crop} x {crop} crops; evaluation at shorter side {self.scale}, "
                f"{self.eval.mode}")

    def validate(self) -> None:
        """Raise ConfigError for values the run cannot use."""
        check_task_keys(self)
        check_positive(self, ("model.num_classes", "schedule.iters", "data.crop_size",
                              "head.fpn_channels", "head.channels", "eval.stride",
                              "run.eval_every_iters"))
        if self.scale <= 0:
            raise ConfigError(f"data.base_size must be positive, got {self.data.base_size}")
        if self.model.num_classes >= 255:
            raise ConfigError("model.num_classes must be below 255 (255 marks ignored pixels)")
        if self.data.crop_size % 32:
            raise ConfigError(f"data.crop_size must be a multiple of 32, "
                              f"got {self.data.crop_size}")
        low, high = self.data.scale_range
        if not 0 < low <= high:
            raise ConfigError(f"data.scale_range must be (low, high) with 0 < low <= high, "
                              f"got {self.data.scale_range}")
        if self.eval.mode not in ("whole", "slide"):
            raise ConfigError(f"eval.mode must be 'whole' or 'slide', got {self.eval.mode!r}")
        if self.head.norm not in ("gn", "bn"):
            raise ConfigError(f"head.norm must be 'gn' or 'bn', got {self.head.norm!r}")
