"""``create_model``, one timm-style builder per variant, and building a model from weights.

The model core (:mod:`fastvit.models`) builds networks and never opens files;
this module sits one floor up so that a model can be created *with weights*:
a checkpoint file of any supported layout (:mod:`fastvit.checkpoints`), or
published weights named by a tag, a URL or a Hub id (:mod:`fastvit.weights`).
:func:`load_weights` is the one place where a weights file becomes a model;
:func:`fastvit.load_model` adds the deploy form on top.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from fastvit.checkpoints import (
    class_names_from_metadata,
    convert_state_dict,
    fused_state,
    guess_variant,
    in_chans_of,
    load_checkpoint,
    load_state_dict_into,
    num_classes_of,
    preprocessing_from_metadata,
    read_checkpoint,
)
from fastvit.checkpoints.layouts import describe_layout, layout_name
from fastvit.errors import CheckpointError, ConfigError
from fastvit.labels import default_class_names
from fastvit.models import VARIANTS, FastVit, list_models
from fastvit.weights import HUB_PREFIX, resolve_weights

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
Pretrained = bool | str | os.PathLike | None  # True | tag | path | URL | "hf-hub:ORG/REPO"


@dataclass
class Loaded:
    """A model ready for use and what is needed to feed it and read its output.

    ``cfg`` is the model's timm-style ``pretrained_cfg`` (input size, crop ratio,
    interpolation, mean/std, and for published weights their tag and sources);
    ``class_names`` are the names stored with the weights (None when the file has
    none); ``source`` says where the weights came from (a path, a tag and its
    origin, or ``"random weights"``).
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


def _check_name(name: str) -> None:
    if name not in VARIANTS:
        raise ConfigError(f"unknown FastViT variant {name!r}; choose one of: "
                          f"{', '.join(list_models('all'))}")


def create_model(name: str, *, pretrained: Pretrained = None, num_classes: int | None = None,
                 in_chans: int = 3, drop_path_rate: float = 0.0, inference_mode: bool = False,
                 checkpoint: str | Path | dict | None = None,
                 cache_dir: PathLike | None = None, **overrides: Any) -> FastVit:
    """Build a FastViT variant by name, optionally with weights.

    ``pretrained`` (as in timm): ``True`` or a tag (``in1k``, ``dist_in1k``,
    ``in1k_reparam``, ``dist_in1k_reparam``) for the official ImageNet weights
    (``apple_mclip``, ``apple_mclip2_dfndr2b``: the MCi towers' CLIP weights), a file
    or folder, a URL, or ``hf-hub:ORG/REPO``; ``name`` may itself be ``hf-hub:ORG/REPO``
    (the variant comes from its ``config.json``). With
    weights, ``num_classes`` defaults to the file's; another size keeps
    everything but the classifier, which is new (fine-tuning). The weights' tag,
    sources and preprocessing go into ``model.pretrained_cfg``.

    Without weights ``num_classes`` is the row's (1000; the CLIP embedding size for
    MCi). ``checkpoint`` loads a whole model of any supported layout (or the image
    tower of a whole CLIP / VLM file), strictly
    (a fused file fuses the model first, see :func:`fastvit.load_checkpoint`).
    ``overrides`` go to :class:`fastvit.models.FastVit` (``features_only``,
    ``out_indices``, ``drop_rate``, ``lkc_act``, ``layer_scale_init``...).
    """
    if name.startswith(HUB_PREFIX):
        if pretrained not in (None, True):
            raise ConfigError(f"{name} names its own weights; drop pretrained={pretrained!r}")
        name, pretrained = None, name
    if pretrained not in (None, False):
        if checkpoint is not None:
            raise ConfigError("give either pretrained or checkpoint, not both")
        return load_weights(name, pretrained, num_classes=num_classes, in_chans=in_chans,
                            drop_path_rate=drop_path_rate, inference_mode=inference_mode,
                            cache_dir=cache_dir, **overrides).model
    _check_name(name)
    model = FastVit(VARIANTS[name], num_classes=num_classes, in_chans=in_chans,
                    drop_path_rate=drop_path_rate, inference_mode=inference_mode, variant=name,
                    **overrides)
    if checkpoint is not None:
        model = load_checkpoint(model, checkpoint)
    return model


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
    if requested is not None:
        _check_name(requested)
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


def load_weights(variant: str | None, weights: Pretrained, *, strict_head: bool = False,
                 ema: bool = False, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, num_classes: int | None = None,
                 cache_dir: PathLike | None = None, progress: bool | None = None,
                 **model_kwargs: Any) -> Loaded:
    """A model built for ``weights`` (see :func:`create_model`), read once, not fused.

    ``strict_head``: the weights are a whole model whose classifier must fit
    ``num_classes``; otherwise another ``num_classes`` gets a new classifier. A
    file without a classification head gives a ``features_only`` backbone; a
    fused file gives a fused model.
    """
    if variant is not None:
        _check_name(variant)
    resolved = resolve_weights(weights, variant, cache_dir=cache_dir, progress=progress)
    source = resolved.source
    raw, metadata = read_checkpoint(resolved.path, use_ema=ema, convert=False)
    if resolved.variant and not _named_variant(metadata):
        metadata = {**metadata, "variant": resolved.variant}
    layout = layout_name(raw)
    state_dict = convert_state_dict(raw)
    name = resolve_variant(variant, state_dict, metadata, source)
    file_classes = num_classes_of(state_dict)
    features_only = features_only or not any(k.startswith("final_conv.") for k in state_dict)
    classes = num_classes if num_classes is not None else (file_classes or 0)
    reset = not strict_head and not features_only and classes != (file_classes or 0)
    form = fused_state(state_dict)
    in_chans = in_chans_of(state_dict) or 3
    if model_kwargs.pop("in_chans", in_chans) != in_chans:
        raise ConfigError(f"{source} takes {in_chans}-channel input; drop in_chans")
    model = FastVit(VARIANTS[name], num_classes=(file_classes or 0) if reset else classes,
                    in_chans=in_chans, features_only=features_only,
                    out_indices=out_indices, variant=name,
                    inference_mode=bool(model_kwargs.pop("inference_mode", False)) or form is True,
                    **model_kwargs)
    label = f"{source} (official layout)" if layout == "official" else source
    with warnings.catch_warnings():  # a partly fused file fusing the model is expected here
        warnings.filterwarnings("ignore", "(?s).*reparameterized before loading",
                                UserWarning)
        model = load_state_dict_into(model, state_dict, source=label, metadata=metadata)
    log.info("%s weights: %s (%s)", name, source, describe_layout(layout, form))
    class_names = class_names_from_metadata(metadata) or resolved.class_names
    model.pretrained_cfg.update(resolved.pretrained_cfg)
    model.pretrained_cfg.update(preprocessing_from_metadata(metadata))  # e.g. trained at 64
    if reset:
        log.info("%s: new %d-class classifier (the file's has %d classes)", source, classes,
                 file_classes or 0)
        model.reset_classifier(classes)
        class_names = None
    if class_names is not None and len(class_names) != model.num_classes:
        class_names = None
    return Loaded(model, name, dict(model.pretrained_cfg), class_names, source, dict(metadata),
                  describe_layout(layout, form))


def _factory(name: str):
    def build(pretrained: Pretrained = False, **kwargs: Any) -> FastVit:
        return create_model(name, pretrained=pretrained, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"Build {name}; ``pretrained=True`` (or a tag, file, URL, hf-hub id) "
                     f"loads weights (see :func:`fastvit.create_model` for arguments).")
    return build


# fastvit_t8() ... fastvit_mci4(): one builder per row of the variant table, as timm has.
BUILDERS: dict[str, Callable[..., FastVit]] = {name: _factory(name) for name in VARIANTS}
globals().update(BUILDERS)
