"""The one way to get a model ready for use: variant, weights, form and preprocessing.

Every command that needs "a model from a variant and/or a checkpoint" calls
:func:`load_model`, and every classification eval transform comes from
:func:`eval_transform`, so ``evaluate``, ``export``, ``predict``, ``bench``,
``convert``, the trainer's initial weights and eval loader, the demo and the
task backbones all see the same network and the same pixels.

>>> loaded = load_model(checkpoint="runs/t8/best.safetensors")  # variant from the file
>>> loaded = load_model("fastvit_t8", checkpoint="in1k")  # the official ImageNet weights
>>> transform = eval_transform(loaded.cfg)
>>> logits = loaded.model(transform(image).unsqueeze(0))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from fastvit.data.transforms import eval_resize_size, interpolation_mode
from fastvit.errors import CheckpointError, ConfigError
from fastvit.factory import Loaded, Pretrained, create_model, load_weights, resolve_variant
from fastvit.models import fold_batchnorms, is_fused, reparameterize

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
RANDOM_WEIGHTS = "random weights"
__all__ = ["RANDOM_WEIGHTS", "Loaded", "eval_transform", "load_model", "resolve_variant"]


def load_model(variant: str | None = None, checkpoint: Pretrained = None, *,
               pretrained: Pretrained = None, ema: bool = False, fused: bool | None = True,
               fold_bn: bool = True, features_only: bool = False,
               out_indices: Sequence[int] | None = None, num_classes: int | None = None,
               cache_dir: PathLike | None = None, progress: bool | None = None,
               **model_kwargs: Any) -> Loaded:
    """Build a FastViT and give it weights; the file is read once.

    ``checkpoint`` is a whole model and must fit exactly; ``pretrained`` is
    initial weights: with another ``num_classes`` than the file's, everything but
    the classifier is loaded and the classifier is new (fine-tuning). Either is
    a file of any layout :func:`fastvit.load_checkpoint` reads (the variant comes
    from its metadata or its keys when ``variant`` is None), a folder written by
    :func:`fastvit.save_pretrained`, a URL, ``hf-hub:ORG/REPO``, or a tag of the
    official ImageNet weights (``True``/``in1k``, ``dist_in1k``, ``in1k_reparam``,
    ``dist_in1k_reparam``; see :mod:`fastvit.weights`), fetched into the cache
    (``cache_dir``, else ``$FASTVIT_CACHE`` or the torch/Hugging Face caches) when
    not there. Without either the weights are random.

    ``fused=True`` returns the reparameterized network and, with ``fold_bn``,
    also folds the BatchNorms left after fusion: the deploy form that export
    ships and evaluation scores. ``fused=False`` keeps the train-time form (a
    fused file then cannot be used); ``fused=None`` keeps the file's form. A file
    without a classification head gives a ``features_only`` backbone. ``ema``
    takes a training checkpoint's EMA weights. ``model_kwargs`` go to
    :func:`fastvit.create_model` (drop path...).
    """
    if checkpoint is True:
        checkpoint = "in1k"
    given = [w for w in (checkpoint, pretrained) if w not in (None, False)]
    if len(given) == 2:
        raise ConfigError("give either a checkpoint (a whole model) or pretrained (initial "
                          "weights), not both")
    if not given:
        if variant is None:
            raise ConfigError("no model: give a variant (--model NAME) or a checkpoint")
        # num_classes None: the row's (1000; a MobileCLIP tower's embedding size)
        model = create_model(variant, num_classes=num_classes, features_only=features_only,
                             out_indices=out_indices, **model_kwargs)
        loaded = Loaded(model, variant, dict(model.pretrained_cfg), None, RANDOM_WEIGHTS)
        log.info("%s has random weights (no checkpoint or pretrained weights given)", variant)
    else:
        loaded = load_weights(variant, given[0], strict_head=checkpoint not in (None, False),
                              ema=ema, features_only=features_only, out_indices=out_indices,
                              num_classes=num_classes, cache_dir=cache_dir, progress=progress,
                              **model_kwargs)
    if fused:
        reparameterize(loaded.model, inplace=True)
        if fold_bn:
            fold_batchnorms(loaded.model)
    elif fused is False and is_fused(loaded.model):
        raise CheckpointError(f"{loaded.source} holds reparameterized (fused) weights: the "
                              f"train-time form cannot be recovered from them; use the "
                              f"train-time checkpoint")
    return loaded


def eval_transform(cfg: Mapping[str, Any], image_size: int | None = None,
                   crop_pct: float | None = None, *, interpolation: str | None = None,
                   raw_pixels: bool = False) -> v2.Compose:
    """The evaluation transform of a model's ``cfg`` (its ``pretrained_cfg``).

    Resize the shorter side to ``floor(image_size / crop_pct)`` (bicubic by
    default), centre crop ``image_size``, scale to [0, 1] and normalize with the
    cfg's mean/std: the paper's protocol, identical to timm's ``create_transform``
    for the same cfg. Accepts uint8 ``(3, H, W)`` tensors or PIL images.
    ``raw_pixels`` ends with 0..255 floats instead (for a model with the
    normalization baked in).
    """
    size = int(image_size or cfg["input_size"][-1])
    crop = float(crop_pct or cfg["crop_pct"])
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if raw_pixels:
        mean, std = (0.0,) * len(mean), (1 / 255.0,) * len(std)
    return v2.Compose([
        v2.Resize(eval_resize_size(size, crop),
                  interpolation=interpolation_mode(interpolation or cfg["interpolation"]),
                  antialias=True),
        v2.CenterCrop(size),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])
