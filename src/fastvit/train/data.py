"""The classification trainer's datasets: any ``--data`` source or the bundled digits.

What a ``--data`` value is (ImageFolder, WebDataset shards, a Hugging Face dataset)
is decided by :func:`fastvit.data.sources.resolve_source`.

The training order and per-sample augmentation seeds come from
:mod:`fastvit.run.sampling`; the held-out split is preprocessed by
:func:`fastvit.pipeline.eval_transform` with the model's own cfg, so the
accuracy printed during training is the one ``fastvit evaluate`` reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from fastvit.data import build_digits, build_train_transform
from fastvit.data.datasets import describe_val_split, has_split
from fastvit.data.digits import DIGITS_MEAN, DIGITS_STD
from fastvit.data.sources import FOLDER, HF, resolve_source
from fastvit.errors import ConfigError, DataError
from fastvit.models import VARIANTS, base_cfg
from fastvit.pipeline import eval_transform
from fastvit.train.config import TrainConfig

DIGITS = "digits"
DIGITS_VAL_FRACTION = 0.2


def val_source(cfg: TrainConfig) -> str:
    """Where the held-out images of :func:`build_datasets` come from, in words."""
    if cfg.data.path == DIGITS:
        return f"{DIGITS_VAL_FRACTION:.0%} of scikit-learn's digits held out (stratified)"
    source = resolve_source(cfg.data.path)
    if source.kind == FOLDER:
        return describe_val_split(cfg.data.path, cfg.data.val_fraction, cfg.run.seed)
    return source.describe_val(cfg.data.val_fraction, cfg.run.seed)


def recorded_with_weights(cfg: TrainConfig) -> dict[str, Any]:
    """What the weights carry in their metadata so that ``evaluate``, ``predict`` and
    ``export`` see the images the way this run's validation did: the eval preprocessing
    (``pretrained_cfg``: input size, crop, interpolation, mean/std) and, for a folder
    without ``val/``, which images were held out (``val_split``)."""
    if not cfg.data.path:
        return {}
    data, variant = cfg.data, cfg.model.variant
    if data.path == DIGITS:  # its own pipeline: 8x8 digits upsampled (bilinear), fixed stats
        return {"pretrained_cfg": {
            "input_size": [3, data.image_size, data.image_size], "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": list(DIGITS_MEAN), "std": list(DIGITS_STD)}}
    base = base_cfg(variant, VARIANTS[variant], 0)
    size = data.image_size
    recorded: dict[str, Any] = {"pretrained_cfg": {
        "input_size": [3, size, size], "crop_pct": data.crop_pct or base["crop_pct"],
        "interpolation": data.interpolation, "mean": list(base["mean"]),
        "std": list(base["std"])}}
    source = resolve_source(data.path)
    if (source.kind == FOLDER and Path(data.path).is_dir() and not has_split(data.path, "val")
            or source.kind == HF and not source.has_val()):
        recorded["val_split"] = {"fraction": data.val_fraction, "seed": cfg.run.seed}
    return recorded


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset, list[str]]:
    """``(train, val, classes)`` for ``data.path`` (any :func:`resolve_source` kind or ``digits``).

    A folder with only ``train/`` gets a seeded, stratified ``data.val_fraction``
    of it held out (:func:`val_source` says which). Raises :class:`DataError` for a
    missing/empty split, no class folders or different class sets, before any
    model is built.
    """
    data = cfg.data
    if not data.path:
        raise ConfigError("no training data: pass --data DIR (an ImageFolder root with train/ "
                          "and optionally val/, a folder of WebDataset shards, a datasets "
                          "folder or Parquet files), --data hf:ORG/NAME or --data digits")
    if data.path == DIGITS:
        return build_digits(data.image_size, seed=0, val_fraction=DIGITS_VAL_FRACTION,
                            augment=True)
    rand_augment = None
    if data.randaugment_magnitude > 0:
        rand_augment = (f"rand-m{data.randaugment_magnitude}-mstd{data.randaugment_mstd}"
                        f"-n{data.randaugment_num_ops}")
    variant = cfg.model.variant
    model_cfg = base_cfg(variant, VARIANTS[variant], 0)  # the variant's mean/std (MCi0-2: 0/1)
    train_tf = build_train_transform(
        data.image_size, interpolation=data.interpolation, hflip=data.hflip,
        rand_augment=rand_augment, re_prob=data.random_erasing, scale=tuple(data.scale),
        ratio=tuple(data.ratio), mean=model_cfg["mean"], std=model_cfg["std"])
    eval_tf = eval_transform(model_cfg, data.image_size, data.crop_pct,
                             interpolation=data.interpolation)
    source = resolve_source(data.path)
    train, val, classes = source.build(train_transform=train_tf, eval_transform=eval_tf,
                                       bad_images=data.bad_images,
                                       val_fraction=data.val_fraction, seed=cfg.run.seed)
    if len(classes) < 2:
        raise DataError(f"{data.path} has {len(classes)} class(es); a classifier needs "
                        f"at least 2")
    return train, val, classes
