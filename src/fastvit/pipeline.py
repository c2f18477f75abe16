"""The one way to get a model ready for use: variant, weights, form and preprocessing.

Every command that needs "a model from a variant and/or a checkpoint" calls
:func:`load_model`, and every classification eval transform comes from
:func:`eval_transform`, so ``evaluate``, ``export``, ``predict``, ``bench``,
``convert``, the trainer's initial weights and eval loader, the demo and the
task backbones all see the same network and the same pixels.

>>> loaded = load_model(checkpoint="runs/t8/best.safetensors")  # variant from the file
>>> transform = eval_transform(loaded.cfg)
>>> logits = loaded.model(transform(image).unsqueeze(0))
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from fastvit.checkpoints import (
    class_names_from_metadata,
    convert_state_dict,
    fused_state,
    guess_variant,
    in_chans_of,
    load_state_dict_into,
    num_classes_of,
    read_checkpoint,
)
from fastvit.checkpoints.layouts import describe_layout, layout_name
from fastvit.data.transforms import eval_resize_size, interpolation_mode
from fastvit.errors import CheckpointError, ConfigError
from fastvit.factory import create_model
from fastvit.labels import default_class_names
from fastvit.models import VARIANTS, fold_batchnorms, is_fused, list_models, reparameterize

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
RANDOM_WEIGHTS = "random weights"


@dataclass
class Loaded:
    """A model ready for use and what is needed to feed it and read its output.

    ``cfg`` is the model's timm-style ``pretrained_cfg`` (input size, crop ratio,
    interpolation, mean/std); ``class_names`` are the names stored with the
    weights (None when the file has none); ``source`` says where the weights
    came from (a path, a tag, or ``"random weights"``).
    """

    model: nn.Module
    variant: str
    cfg: dict[str, Any]
    class_names: list[str] | None
    source: str
    metadata: dict[str, str] = field(default_factory=dict)
    layout: str | None = None  # the file's layout, e.g. "official (apple/ml-fastvit), fused"

    @property
    def image_size(self) -> int:
        return int(self.cfg["input_size"][-1])

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)

    @property
    def labels(self) -> list[str] | None:
        """Names to print for each output: the file's, else ImageNet's for 1000 classes."""
        if getattr(self.model, "features_only", False):
            return None
        return self.class_names or default_class_names(self.num_classes)

    def label(self, index: int) -> str:
        labels = self.labels
        return labels[index] if labels is not None and index < len(labels) else f"class_{index}"


def _named_variant(metadata: Mapping[str, str]) -> str | None:
    """The variant a file's metadata names (``fastvit_t8``; timm's ``fastvit_t8.apple_in1k``)."""
    for key in ("variant", "architecture", "arch"):
        value = metadata.get(key)
        if value:
            return str(value).split(".")[0]
    return None


def resolve_variant(requested: str | None, state_dict: Mapping[str, Any],
                    metadata: Mapping[str, str], source: str) -> str:
    """The requested variant, else the one the metadata names, else the one whose keys and
    shapes match exactly; a file of another variant than requested is refused."""
    if requested is not None and requested not in VARIANTS:
        raise ConfigError(f"unknown FastViT variant {requested!r}; choose one of: "
                          f"{', '.join(list_models())}")
    said = _named_variant(metadata)
    if requested and said in VARIANTS and said != requested:
        raise CheckpointError(f"checkpoint {source} holds {said} weights, not {requested}: "
                              f"use --model {said} (or omit --model)")
    if requested:
        return requested
    if said in VARIANTS:
        return said
    score, name, _ = guess_variant(state_dict, fused_state(state_dict))[0]
    if score == 1.0:
        return name
    raise ConfigError(f"cannot tell which variant {source} holds (closest: {name}, "
                      f"{score:.0%} of keys and shapes match): pass --model NAME")


def load_model(variant: str | None = None, checkpoint: PathLike | None = None, *,
               pretrained: PathLike | None = None, ema: bool = False, fused: bool | None = True,
               fold_bn: bool = True, features_only: bool = False,
               out_indices: Sequence[int] = (0, 1, 2, 3), num_classes: int | None = None,
               **model_kwargs: Any) -> Loaded:
    """Build a FastViT and give it weights; the file is read once.

    ``checkpoint`` is a whole model (any layout :func:`fastvit.load_checkpoint`
    reads; the variant comes from its metadata or its keys when ``variant`` is
    None) and must fit exactly. ``pretrained`` is initial weights: with another
    ``num_classes`` than the file's, everything but the classifier is loaded and
    the classifier is new (fine-tuning). Without either the weights are random.

    ``fused=True`` returns the reparameterized network and, with ``fold_bn``,
    also folds the BatchNorms left after fusion: the deploy form that export
    ships and evaluation scores. ``fused=False`` keeps the train-time form (a
    fused file then cannot be used); ``fused=None`` keeps the file's form. A file
    without a classification head gives a ``features_only`` backbone. ``ema``
    takes a training checkpoint's EMA weights. ``model_kwargs`` go to
    :func:`fastvit.create_model` (drop path...).
    """
    if checkpoint is not None and pretrained is not None:
        raise ConfigError("give either a checkpoint (a whole model) or pretrained (initial "
                          "weights), not both")
    path = checkpoint if checkpoint is not None else pretrained
    if path is None:
        if variant is None:
            raise ConfigError("no model: give a variant (--model NAME) or a checkpoint")
        model = create_model(variant, num_classes=1000 if num_classes is None else num_classes,
                             features_only=features_only, out_indices=out_indices,
                             **model_kwargs)
        loaded = Loaded(model, variant, dict(model.pretrained_cfg), None, RANDOM_WEIGHTS)
        log.info("%s has random weights (no checkpoint or pretrained weights given)", variant)
    else:
        loaded = _from_file(variant, str(path), strict_head=checkpoint is not None, ema=ema,
                            features_only=features_only, out_indices=out_indices,
                            num_classes=num_classes, model_kwargs=model_kwargs)
    if fused:
        reparameterize(loaded.model, inplace=True)
        if fold_bn:
            fold_batchnorms(loaded.model)
    elif fused is False and is_fused(loaded.model):
        raise CheckpointError(f"{loaded.source} holds reparameterized (fused) weights: the "
                              f"train-time form cannot be recovered from them; use the "
                              f"train-time checkpoint")
    return loaded


def _from_file(variant: str | None, source: str, *, strict_head: bool, ema: bool,
               features_only: bool, out_indices: Sequence[int], num_classes: int | None,
               model_kwargs: dict[str, Any]) -> Loaded:
    raw, metadata = read_checkpoint(source, use_ema=ema, convert=False)
    layout = layout_name(raw)
    state_dict = convert_state_dict(raw)
    name = resolve_variant(variant, state_dict, metadata, source)
    file_classes = num_classes_of(state_dict)
    has_final_conv = any(k.startswith("final_conv.") for k in state_dict)
    features_only = features_only or not has_final_conv
    classes = num_classes if num_classes is not None else (file_classes or 0)
    reset = (not strict_head and not features_only and classes != (file_classes or 0))
    form = fused_state(state_dict)
    model = create_model(name, num_classes=(file_classes or 0) if reset else classes,
                         in_chans=in_chans_of(state_dict) or 3, features_only=features_only,
                         out_indices=out_indices, inference_mode=form is True, **model_kwargs)
    label = f"{source} (official layout)" if layout == "official" else source
    with warnings.catch_warnings():  # a partly fused file fusing the model is expected here
        warnings.filterwarnings("ignore", "(?s).*reparameterized before loading",
                                UserWarning)
        model = load_state_dict_into(model, state_dict, source=label, metadata=metadata)
    class_names = class_names_from_metadata(metadata)
    if reset:
        log.info("%s: new %d-class classifier (the file's has %d classes)", source, classes,
                 file_classes or 0)
        model.reset_classifier(classes)
        class_names = None
    if class_names is not None and len(class_names) != model.num_classes:
        class_names = None
    return Loaded(model, name, dict(model.pretrained_cfg), class_names, source, dict(metadata),
                  describe_layout(layout, form))


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
