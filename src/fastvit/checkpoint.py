"""Reading, loading and writing checkpoints of every layout users hold.

Accepted: our safetensors files, ``.pt``/``.pth``/``.pth.tar`` files holding a
state dict (ours/timm, or the official release's under ``state_dict``), and
training checkpoints (``model`` / ``ema`` entries, also timm's ``state_dict_ema``),
with ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefixes. The layout,
fused or not, is read from the key names (:mod:`fastvit.checkpoint_layouts`).

Files are never unpickled beyond tensors and plain containers
(``torch.load(weights_only=True)``), so a checkpoint cannot run code.

Fused and train-time forms are reconciled automatically:

* a fused checkpoint into a train-time model: the model is reparameterized
  first (a warning says so) and the fused model is returned;
* a train-time checkpoint into a fused (``inference_mode=True``) FastVit: the
  weights are loaded into a train-time twin, fused, and copied in.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastvit.checkpoint_layouts import (
    Layout,
    StateDict,
    convert_state_dict,
    detect_layout,
    fused_state,
    guess_variant,
    in_chans_of,
    layout_name,
    num_classes_of,
    strip_wrapper_prefixes,
    to_official_layout,
)
from fastvit.errors import CheckpointError
from fastvit.io import atomic_write
from fastvit.layers import Reparameterizable
from fastvit.reparam import is_fused, reparameterize

__all__ = [
    "Layout",
    "class_names_from_metadata",
    "convert_state_dict",
    "detect_layout",
    "load_checkpoint",
    "load_state_dict_into",
    "read_checkpoint",
    "save_checkpoint",
    "to_official_layout",
]

log = logging.getLogger(__name__)

FORMAT_NAME, FORMAT_VERSION = "fastvit", "1"
MODEL_ENTRIES = ("model", "state_dict", "model_state_dict")
EMA_ENTRIES = ("ema", "state_dict_ema", "model_ema", "ema_state_dict")
MAX_LISTED = 8  # keys shown per category in a mismatch error

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------


def _looks_like_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"  # 8-byte header length, then JSON


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as err:  # the Rust reader raises its own exception types
        raise CheckpointError(f"cannot read checkpoint {path}: not a valid safetensors file "
                              f"(truncated or corrupt?): {err}") from None
    return tensors, metadata


def _torch_load(path: Path) -> Any:
    try:
        # argparse.Namespace: timm's training checkpoints store their arguments in one;
        # it is a plain attribute bag, so allowing it runs no code.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = _unsafe_globals(path)
        text = str(err)
        if names or "global" in text.lower() or "unsupported operand" in text.lower():
            raise CheckpointError(_unsafe_message(path, names)) from None
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated "
                              f"({text.splitlines()[0] if text else 'unpickling failed'})"
                              ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch or safetensors "
                              f"file, or truncated/corrupt ({first})") from None


def _unsafe_globals(path: Path) -> list[str]:
    """Python objects a zip checkpoint would import (read from its opcodes, not run)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy or broken file: the names are only used in the message
        return []


def _unsafe_message(path: Path, names: list[str]) -> str:
    found = f" (it references {', '.join(names[:5])})" if names else ""
    return (f"refusing to load checkpoint {path}: unpickling it needs arbitrary Python "
            f"objects{found}, which can run code. Only tensors and plain containers are "
            f"loaded (torch.load(weights_only=True)); nothing in the file was executed. If you "
            f"trust the file, extract its state dict in a separate session and save it with "
            f"fastvit.checkpoint.save_checkpoint (or safetensors).")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _scalar_metadata(container: Mapping) -> dict[str, str]:
    """Plain entries of a training checkpoint (``arch``, ``variant``, ``epoch``...)."""
    meta = {}
    for key, value in container.items():
        if isinstance(key, str) and isinstance(value, str | int | float | bool):
            meta[key] = str(value)
    for key in ("class_names", "classes"):  # our trainer stores the label names as "classes"
        names = container.get(key)
        if isinstance(names, list | tuple) and all(isinstance(n, str) for n in names):
            meta["class_names"] = json.dumps(list(names))
            break
    inner = container.get("metadata")
    if isinstance(inner, Mapping):
        meta.update({str(k): v if isinstance(v, str) else json.dumps(v)
                     for k, v in inner.items()})
    return meta


def _unwrap(obj: Any, source: str, use_ema: bool) -> tuple[StateDict, dict[str, str]]:
    """Find the weights inside whatever ``torch.load`` returned."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict")
    if _is_state_dict(obj):
        if use_ema:
            raise CheckpointError(f"{source} is a plain state dict without EMA weights; "
                                  f"load it without use_ema / --ema")
        return dict(obj), {}
    entries = EMA_ENTRIES if use_ema else MODEL_ENTRIES
    for entry in entries:
        inner = obj.get(entry)
        if isinstance(inner, Mapping) and inner:
            if not _is_state_dict(inner):  # e.g. {"model": {"state_dict": ...}}
                inner, _ = _unwrap(inner, f"{source}[{entry!r}]", False)
            return dict(inner), _scalar_metadata(obj)
    what = "EMA weights" if use_ema else "model weights"
    top = ", ".join(repr(k) for k in list(obj)[:10]) or "nothing"
    raise CheckpointError(f"no {what} found in {source}: expected a state dict or one of the "
                          f"entries {', '.join(entries)}; it holds {top}")


def read_checkpoint(path: PathLike, *, use_ema: bool = False, convert: bool = True
                    ) -> tuple[StateDict, dict[str, str]]:
    """Weights and metadata of any supported checkpoint file.

    Returns ``(state_dict, metadata)``: the state dict unwrapped, without
    ``module.``/``_orig_mod.`` prefixes and (``convert=True``) renamed to our
    layout; ``metadata`` is the safetensors header metadata, or the plain
    entries of a training checkpoint (``{}`` for a bare state dict).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if _looks_like_safetensors(path):
        state_dict, metadata = _read_safetensors(path)
        if use_ema:
            raise CheckpointError(f"{path} is a safetensors file holding one set of weights, "
                                  f"not a training checkpoint with EMA weights; drop use_ema")
    else:
        state_dict, metadata = _unwrap(_torch_load(path), str(path), use_ema)
    try:
        state_dict = convert_state_dict(state_dict) if convert else strip_wrapper_prefixes(
            state_dict)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return state_dict, metadata


def class_names_from_metadata(metadata: Mapping[str, str]) -> list[str] | None:
    """The ``class_names`` list stored by :func:`save_checkpoint`, if any."""
    raw = metadata.get("class_names")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError("checkpoint metadata 'class_names' is not a JSON list") from None
    if not isinstance(names, list):
        raise CheckpointError("checkpoint metadata 'class_names' is not a JSON list")
    return [str(n) for n in names]


# ---------------------------------------------------------------------------
# Loading into a model
# ---------------------------------------------------------------------------


def _inner_model(model: nn.Module) -> nn.Module:
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
    from fastvit.model import FastVit

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
    from fastvit.model import FastVit

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
        raw, metadata = _unwrap(path_or_state_dict, source, use_ema)
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
    inner = _inner_model(model)
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


# ---------------------------------------------------------------------------
# Writing our format
# ---------------------------------------------------------------------------


def save_checkpoint(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: PathLike,
                    *, variant: str | None = None, class_names: Sequence[str] | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write weights in our format: safetensors with self-describing metadata.

    Metadata: ``format``, ``format_version``, ``variant`` (given, the model's, or
    recognised from the weights), ``fused``, ``num_classes``, ``in_chans``,
    ``class_names`` (a JSON list) and the user's ``metadata`` (non-strings stored
    as JSON). The file is written atomically: never half-written.
    """
    from safetensors.torch import save_file

    from fastvit.model import list_models

    if isinstance(model_or_state_dict, nn.Module):
        inner = _inner_model(model_or_state_dict)
        state_dict = dict(inner.state_dict())
        variant = variant or getattr(inner, "variant", None)
    else:
        state_dict = convert_state_dict(_unwrap(model_or_state_dict, "the state dict", False)[0])
    if variant is None:
        score, guessed, _ = guess_variant(state_dict, fused_state(state_dict))[0]
        variant = guessed if score == 1.0 else None
    if variant is not None and variant not in list_models():
        raise CheckpointError(f"unknown variant {variant!r}; choose one of: "
                              f"{', '.join(list_models())}")
    num_classes = num_classes_of(state_dict)
    meta = {str(k): v if isinstance(v, str) else json.dumps(v)
            for k, v in (metadata or {}).items()}
    fused = fused_state(state_dict)
    meta.update(format=FORMAT_NAME, format_version=FORMAT_VERSION,
                fused={True: "true", False: "false", None: "partial"}[fused],
                num_classes=str(num_classes if num_classes is not None else 0))
    if variant is not None:
        meta["variant"] = variant
    in_chans = in_chans_of(state_dict)
    if in_chans is not None:
        meta["in_chans"] = str(in_chans)
    if class_names is not None:
        names = [str(n) for n in class_names]
        if num_classes is not None and len(names) != num_classes:
            raise CheckpointError(f"{len(names)} class names given for a {num_classes}-class "
                                  f"classifier")
        meta["class_names"] = json.dumps(names)
    seen: set[int] = set()
    tensors = {}
    for key, value in state_dict.items():
        tensor = value.detach().to("cpu").contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen and tensor.numel():  # safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
