"""Loading weights of any layout into a model, with one readable error when they do not fit.

Fused and train-time forms are reconciled automatically:

* a fused checkpoint into a train-time model: the model is reparameterized
  first (a warning says so) and the fused model is returned;
* a train-time checkpoint into a fused (``inference_mode=True``) FastVit: the
  weights are loaded into a train-time twin, fused, and copied in.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fastvit.checkpoints.layouts import (
    StateDict,
    convert_state_dict,
    fused_state,
    guess_variant,
    in_chans_of,
    layout_name,
    num_classes_of,
    strip_wrapper_prefixes,
)
from fastvit.checkpoints.reading import PathLike, read_checkpoint, unwrap
from fastvit.errors import CheckpointError
from fastvit.models import FastVit, is_fused, reparameterize
from fastvit.models.layers import Reparameterizable

log = logging.getLogger(__name__)

MAX_LISTED = 8  # keys shown per category in a mismatch error


def inner_model(model: nn.Module) -> nn.Module:
    """The module that owns the weights, under DDP / DataParallel / torch.compile."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _variant_hint(state_dict: StateDict, metadata: Mapping[str, str]) -> str:
    ranked = guess_variant(state_dict, fused_state(state_dict))
    score, name, fused = ranked[0]
    form = "fused" if fused else "train-time"
    if score == 1.0:
        hint = (f"it most likely belongs to {name} ({form} form: every key and shape matches); "
                f"build that variant, e.g. create_model({name!r}, checkpoint=...)")
    elif score > 0:
        hint = f"closest variant: {name} ({form} form, {score:.0%} of keys and shapes match)"
    else:
        hint = "no FastViT variant resembles it"
    said = metadata.get("variant") or metadata.get("arch")
    if said:
        hint += f"; its metadata names {said!r}"
    return hint


def _listing(title: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def _check_fit(model: nn.Module, state_dict: StateDict, strict: bool, source: str,
               metadata: Mapping[str, str]) -> StateDict:
    """Compare with the model's state dict; raise one readable error or return what to load."""
    target = model.state_dict()
    sd = dict(state_dict)
    for prefix in ("head.", "final_conv."):  # features_only / num_classes=0 models
        if not any(k.startswith(prefix) for k in target):
            sd = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    for key, value in target.items():  # older files may lack the BN counters
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = value
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [k for k in sd if k in target and sd[k].shape != target[k].shape]
    if not (missing or unexpected or mismatched):
        return sd
    if not strict:
        warnings.warn(f"partial load from {source}: {len(missing)} missing, "
                      f"{len(unexpected)} unexpected and {len(mismatched)} differently "
                      f"shaped tensors skipped (strict=False)", stacklevel=3)
        return {k: v for k, v in sd.items() if k in target and k not in mismatched}
    name = getattr(model, "variant", type(model).__name__)
    if not missing and not unexpected:
        _raise_if_only_io_sizes_differ(sd, target, mismatched, name, source)
    form = {True: "fused", False: "train-time", None: "partly fused"}[fused_state(state_dict)]
    message = (f"checkpoint {source} holds {form} weights that do not fit the {name} model "
               f"({'fused' if is_fused(model) else 'train-time'}): "
               f"{_variant_hint(state_dict, metadata)}")
    if missing:
        message += _listing("missing from the checkpoint", missing)
    if unexpected:
        message += _listing("unexpected in the checkpoint", unexpected)
    if mismatched:
        message += _listing("shape differs (checkpoint vs model)", [
            f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in mismatched])
    raise CheckpointError(message)


def _raise_if_only_io_sizes_differ(sd: StateDict, target: Mapping[str, torch.Tensor],
                                   mismatched: list[str], name: str, source: str) -> None:
    """Same architecture, other classifier size or input channels: say which option fixes it."""
    head = {k for k in mismatched if k.startswith("head.fc.")}
    stem = {k for k in mismatched if k.startswith("stem.0.")
            and sd[k].shape[:1] + sd[k].shape[2:] == target[k].shape[:1] + target[k].shape[2:]}
    if head | stem != set(mismatched):
        return
    fixes, problems = [], []
    if head:
        n, m = num_classes_of(sd), num_classes_of(target)
        problems.append(f"a {n}-class classifier (the model has {m})")
        fixes.append(f"num_classes={n}")
    if stem:
        n, m = in_chans_of(sd), in_chans_of(target)
        problems.append(f"a {n}-channel input (the model takes {m})")
        fixes.append(f"in_chans={n}")
    options = ", ".join(fixes)
    skip = " except the classifier (fine-tuning)" if head and not stem else " that fits"
    raise CheckpointError(
        f"{source} has {' and '.join(problems)}: build the {name} model with {options} "
        f"(e.g. create_model({name!r}, {options}, checkpoint=...)), or pass strict=False "
        f"to load everything{skip}")


def _meta_twin(model: nn.Module, inference_mode: bool) -> nn.Module | None:
    """A weightless copy of a FastVit's configuration, to check a file before fusing."""
    if not isinstance(model, FastVit):
        return None
    with torch.device("meta"):
        return FastVit(model.spec, num_classes=model.num_classes, in_chans=model.in_chans,
                       features_only=model.features_only, variant=model.variant,
                       inference_mode=inference_mode)


def _fuse_like_checkpoint(model: nn.Module, state_dict: StateDict) -> int:
    """Fuse exactly the blocks the checkpoint stores fused; return how many."""
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, Reparameterizable)]
    count = 0
    for name, module in blocks:
        if (getattr(module, "reparam_conv", None) is None
                and f"{name}.reparam_conv.weight" in state_dict):
            module.reparameterize()
            count += 1
    return count


def _load_via_train_time_twin(model: nn.Module, state_dict: StateDict, strict: bool,
                              source: str, metadata: Mapping[str, str]) -> None:
    """Train-time weights into a fused FastVit: load a train-time twin, fuse it, copy."""
    if not isinstance(model, FastVit):
        raise CheckpointError(
            f"{source} holds train-time (unfused) weights but the model is fused: build the "
            f"model with inference_mode=False, load the checkpoint, then call "
            f"fastvit.reparameterize(model)")
    twin = FastVit(model.spec, num_classes=model.num_classes, in_chans=model.in_chans,
                   features_only=model.features_only, variant=model.variant,
                   inference_mode=False)
    twin.load_state_dict(_check_fit(twin, state_dict, strict, source, metadata), strict=False)
    reparameterize(twin, inplace=True)
    model.load_state_dict(twin.state_dict(), strict=strict)
    log.info("fused the train-time weights of %s to load them into an inference-mode model",
             source)


def load_checkpoint(model: nn.Module, path_or_state_dict: PathLike | Mapping[str, Any],
                    strict: bool = True, use_ema: bool = False) -> nn.Module:
    """Load weights of any supported layout into ``model`` and return the model.

    ``path_or_state_dict`` is a file (safetensors, ``.pt``, ``.pth``,
    ``.pth.tar``) or an already loaded dict (a state dict or a training
    checkpoint). ``use_ema`` picks the EMA weights of a training checkpoint.
    ``strict=False`` skips missing, unexpected and differently shaped tensors
    (e.g. another classifier size when fine-tuning) with a warning instead of
    raising. A fused checkpoint reparameterizes a train-time model first (the
    returned model is then fused, in eval mode); a train-time checkpoint is fused
    on the way into an ``inference_mode=True`` model. Heads absent from the model
    (``features_only``) are skipped.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the given state dict"
        raw, metadata = unwrap(path_or_state_dict, source, use_ema)
        raw = strip_wrapper_prefixes(raw)
    else:
        source = str(path_or_state_dict)
        raw, metadata = read_checkpoint(path_or_state_dict, use_ema=use_ema, convert=False)
    try:
        if layout_name(raw) == "official":
            source += " (official layout)"
        state_dict = convert_state_dict(raw)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from None
    return load_state_dict_into(model, state_dict, strict=strict, source=source,
                                metadata=metadata)


def load_state_dict_into(model: nn.Module, state_dict: StateDict, *, strict: bool = True,
                         source: str = "the state dict",
                         metadata: Mapping[str, str] | None = None) -> nn.Module:
    """The second half of :func:`load_checkpoint`, for a state dict already in our
    layout (``source`` names it in error messages)."""
    metadata = metadata or {}
    inner = inner_model(model)
    has_blocks = any(isinstance(m, Reparameterizable) for m in inner.modules())
    file_fused = fused_state(state_dict)
    if has_blocks and file_fused is not False and not is_fused(inner):
        if file_fused:
            twin = _meta_twin(inner, inference_mode=True) if strict else None
            if twin is not None:  # refuse before touching the model
                _check_fit(twin, state_dict, strict, source, metadata)
            reparameterize(inner, inplace=True)
        else:
            _fuse_like_checkpoint(inner, state_dict)
        warnings.warn(f"{source} holds fused (reparameterized) weights, so the model was "
                      f"reparameterized before loading: it is now an inference model. To "
                      f"fine-tune, load a train-time checkpoint instead.", stacklevel=3)
    elif has_blocks and file_fused is False and is_fused(inner):
        _load_via_train_time_twin(inner, state_dict, strict, source, metadata)
        return model
    inner.load_state_dict(_check_fit(inner, state_dict, strict, source, metadata),
                          strict=strict)
    return model
