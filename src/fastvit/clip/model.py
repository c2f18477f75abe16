"""A CLIP model with our image tower: open_clip's text tower and tokenizer around a FastViT.

:func:`load_clip` reads an open_clip whole-model file once and builds

* the image tower with :func:`fastvit.create_model` (``fastvit_mciN``) from the file's
  ``visual.trunk.`` keys, in the deploy form (reparameterized, BatchNorms folded) by
  default; its ``pretrained_cfg`` is the preprocessing (:func:`fastvit.eval_transform`);
* open_clip's text tower (its ``TextTransformer``, built weightless on the ``meta``
  device and given the file's ``text.*`` tensors) and its tokenizer;
* ``logit_scale`` (and ``logit_bias`` where a model has one).

Features are computed as open_clip's ``CustomTextCLIP`` computes them: each tower's
output, L2-normalized.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvit.checkpoints import (
    convert_state_dict,
    fused_state,
    guess_variant,
    preprocessing_from_metadata,
    read_state_dict,
)
from fastvit.checkpoints.layouts import StateDict, strip_shared_prefixes
from fastvit.clip.models import clip_spec, models_with_tower
from fastvit.clip.weights import ClipWeights, PathLike, resolve_clip_weights
from fastvit.errors import CheckpointError, ConfigError, FastVitError
from fastvit.extras import require
from fastvit.factory import create_model
from fastvit.models import fold_batchnorms, reparameterize

log = logging.getLogger(__name__)
TEXT_FEATURE = "the MobileCLIP text tower"


class ClipModel(nn.Module):
    """Image tower (ours), text tower and tokenizer (open_clip's) and the logit scale.

    ``name`` is open_clip's model name, ``tower`` our variant, ``cfg`` the image tower's
    ``pretrained_cfg`` (preprocessing), ``source`` where the weights came from and
    ``weights`` what the user wrote for them. ``text`` is None for an image-only model.
    """

    def __init__(self, name: str, image: nn.Module, text: nn.Module | None, tokenizer: Any,
                 logit_scale: torch.Tensor | None, logit_bias: torch.Tensor | None = None, *,
                 source: str = "", weights: str = "") -> None:
        super().__init__()
        self.name, self.image, self.text, self.tokenizer = name, image, text, tokenizer
        self.register_buffer("logit_scale", logit_scale)
        self.register_buffer("logit_bias", logit_bias)
        self.source, self.weights = source, weights

    @property
    def tower(self) -> str:
        return str(getattr(self.image, "variant", ""))

    @property
    def cfg(self) -> dict[str, Any]:
        return dict(self.image.pretrained_cfg)

    @property
    def embed_dim(self) -> int:
        return int(self.image.num_classes)

    @property
    def device(self) -> torch.device:
        return next(self.image.parameters()).device

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings of a preprocessed batch (L2-normalized by default)."""
        features = self.image(images)
        return F.normalize(features, dim=-1) if normalize else features

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        self._need_text()
        return self.tokenizer(list(texts))

    def encode_text(self, texts: Sequence[str] | torch.Tensor, normalize: bool = True
                    ) -> torch.Tensor:
        """Text embeddings of strings (tokenized with open_clip's tokenizer) or tokens."""
        self._need_text()
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        features = self.text(tokens.to(self.device))
        return F.normalize(features, dim=-1) if normalize else features

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor
               ) -> torch.Tensor:
        """``exp(logit_scale) * cosine`` (+ ``logit_bias``), images x texts, as open_clip's
        ``get_logits`` (the features must be normalized already)."""
        self._need_text()
        out = self.logit_scale.exp() * image_features @ text_features.T
        return out + self.logit_bias if self.logit_bias is not None else out

    def _need_text(self) -> None:
        if self.text is None:
            raise ConfigError(f"{self.name} was loaded without its text tower (image "
                              f"embeddings only); load it with text=True")


def load_clip(name: str, checkpoint: PathLike | None = None, pretrained: str | None = None, *,
              text: bool = True, fused: bool = True, cache_dir: PathLike | None = None
              ) -> ClipModel:
    """Build CLIP model ``name`` (open_clip's name, e.g. ``"MobileCLIP2-S0"``) with the
    weights of ``checkpoint`` (an open_clip whole-model file) or ``pretrained`` (a tag, see
    :mod:`fastvit.clip.weights`), in eval mode on the CPU.

    ``text=False`` loads the image tower alone (no open_clip needed; a file holding only
    the image tower is then fine). ``fused`` gives the image tower's deploy form.
    """
    spec = clip_spec(name)
    weights = resolve_clip_weights(name, checkpoint, pretrained, text=text,
                                   cache_dir=cache_dir)
    raw, metadata = read_state_dict(weights.path)
    state = strip_shared_prefixes({k: v for k, v in raw.items() if k != "n_averaged"})
    tower_sd = _image_state(name, spec.tower, state, weights.source)
    text_tower = tokenizer = scale = bias = None
    if text:
        text_tower, tokenizer, scale, bias = _text_tower(name, state, weights.source)
    image = _image_tower(spec.tower, tower_sd, weights, metadata)
    if fused:
        reparameterize(image, inplace=True)
        fold_batchnorms(image)
    log.info("%s: image tower %s, weights %s", name, spec.tower, weights.source)
    model = ClipModel(name, image, text_tower, tokenizer, scale, bias, source=weights.source,
                      weights=weights.spec)
    return model.eval()


def _image_state(name: str, tower: str, state: StateDict, source: str) -> StateDict:
    """The file's image tower in our layout; a tower of another variant is one line
    naming the model it belongs to."""
    try:
        tower_sd = convert_state_dict(state)  # the visual.trunk. keys, in our layout
    except CheckpointError as err:
        raise CheckpointError(f"{source}: no image tower found: {err}") from None
    form = fused_state(tower_sd)
    score = guess_variant(tower_sd, form, candidates=[tower])[0][0]
    if score == 1.0:
        return tower_sd
    ranked = guess_variant(tower_sd, form)
    best_score, best, _ = ranked[0]
    if best_score == 1.0:
        owners = models_with_tower(best)
        hint = f"pass --model {owners[0]}" if owners else "no open_clip model uses it"
        raise CheckpointError(f"{source} holds the image tower of {best} "
                              f"({', '.join(owners) or best}), not the {tower} of {name}: "
                              f"{hint}")
    raise CheckpointError(f"{source}: its image tower does not fit {tower} ({name}): "
                          f"{score:.0%} of keys and shapes match (closest: {best}, "
                          f"{best_score:.0%})")


def _image_tower(tower: str, tower_sd: StateDict, weights: ClipWeights,
                 metadata: dict[str, str]) -> nn.Module:
    """``fastvit.create_model(tower)`` holding the image tower, with its preprocessing: the
    row's, the release's (crop ratio), or what the file records (``pretrained_cfg``
    metadata of our safetensors files, e.g. a model fine-tuned at another size)."""
    image = create_model(tower, checkpoint=tower_sd)
    if weights.registry_tag is not None:
        from fastvit.weights import official_weights

        with contextlib.suppress(FastVitError):  # a pair the registry lacks: the row's cfg
            image.pretrained_cfg.update(official_weights(tower, weights.registry_tag)
                                        .pretrained_cfg())
    image.pretrained_cfg.update(preprocessing_from_metadata(metadata))
    image.pretrained_cfg["file"] = str(weights.path)
    return image.eval()


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs through the root logger's module functions (``logging.info``), which
    also install a root handler when there is none (every later message of every library
    then shows twice): hold its messages back and drop any handler it installs."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def _text_tower(name: str, state: StateDict, source: str
                ) -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor | None]:
    """open_clip's text tower of ``name`` with the file's ``text.*`` tensors, its
    tokenizer, ``logit_scale`` and ``logit_bias`` (None when absent)."""
    open_clip = require("open_clip", TEXT_FEATURE, "clip")
    config = open_clip.get_model_config(name)
    tower = clip_spec(name).tower
    if config is None or config.get("vision_cfg", {}).get("timm_model_name") != tower:
        raise ConfigError(f"this open_clip ({open_clip.__version__}) has no {name} with a "
                          f"{tower} image tower: install the version fastvit[clip] pins")
    tensors = {k[len("text."):]: v.float() if v.is_floating_point() else v
               for k, v in state.items() if k.startswith("text.")}
    if not tensors or "logit_scale" not in state:
        missing = "text tower (text.* keys)" if not tensors else "logit_scale"
        raise CheckpointError(f"{source} holds no {missing}: give open_clip's whole {name} "
                              f"model (e.g. --pretrained {next(iter(clip_spec(name).releases))})"
                              f", not an image tower alone")
    text = _weightless_text_tower(open_clip, name, config)
    _check_text_fit(text, tensors, name, source)
    text.load_state_dict(tensors, strict=True, assign=True)
    if getattr(text, "attn_mask", None) is not None and text.attn_mask.is_meta:
        text.attn_mask = text.build_causal_mask()  # a buffer the file does not store
    if any(t.is_meta for t in (*text.parameters(), *text.buffers())):
        raise CheckpointError(f"{source}: {name}'s text tower has tensors the file lacks")
    scale = state["logit_scale"].detach().float().clone()
    bias = state.get("logit_bias")
    with _quiet_open_clip():
        tokenizer = open_clip.get_tokenizer(name)
    return text.eval(), tokenizer, scale, None if bias is None else bias.detach().float()


def _weightless_text_tower(open_clip: Any, name: str, config: dict[str, Any]) -> nn.Module:
    """``CustomTextCLIP.text`` of ``name`` on the meta device: built as open_clip builds it
    (its ``_build_text_tower``), without the image tower; through ``create_model`` should
    a later open_clip rename that helper."""
    build = getattr(getattr(open_clip, "model", None), "_build_text_tower", None)
    with _quiet_open_clip(), torch.device("meta"):
        if build is not None:
            return build(config["embed_dim"], config["text_cfg"],
                         quick_gelu=config.get("quick_gelu", False))
        return open_clip.create_model(name, pretrained=None, load_weights=False,
                                      device="meta").text


def _check_text_fit(text: nn.Module, tensors: StateDict, name: str, source: str) -> None:
    want = {k: tuple(v.shape) for k, v in text.state_dict().items()}
    missing = [k for k in want if k not in tensors]
    unexpected = [k for k in tensors if k not in want]
    shaped = [f"text.{k} {tuple(tensors[k].shape)} vs {want[k]}" for k in want
              if k in tensors and tuple(tensors[k].shape) != want[k]]
    if missing or unexpected or shaped:
        detail = (shaped[:1] or [f"text.{k} missing" for k in missing[:1]]
                  or [f"text.{k} unexpected" for k in unexpected[:1]])[0]
        raise CheckpointError(f"{source}: its text tower does not fit {name}'s ({detail}; "
                              f"{len(missing)} missing, {len(unexpected)} unexpected, "
                              f"{len(shaped)} differently shaped tensors): is it another "
                              f"model's file?")
