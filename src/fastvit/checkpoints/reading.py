"""Reading checkpoint files of every layout users hold, without running their code.

Accepted: our safetensors files, ``.pt``/``.pth``/``.pth.tar`` files holding a
state dict (ours/timm, or the official release's under ``state_dict``), and
training checkpoints (``model`` / ``ema`` entries, also timm's ``state_dict_ema``),
with ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefixes. The layout,
fused or not, is read from the key names (:mod:`fastvit.checkpoints.layouts`).

Files are never unpickled beyond tensors and plain containers
(``torch.load(weights_only=True)``), so a checkpoint cannot run code. A file
the weights-only reader refuses is diagnosed from its pickle opcodes (read,
never run): a well-formed pickle that needs Python objects is *unsafe*
("refusing to load"), bytes that do not parse are *corrupt or truncated*.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fastvit.checkpoints.layouts import StateDict, convert_state_dict, strip_wrapper_prefixes
from fastvit.errors import CheckpointError

MODEL_ENTRIES = ("model", "state_dict", "model_state_dict")
EMA_ENTRIES = ("ema", "state_dict_ema", "model_ema", "ema_state_dict")

PathLike = str | os.PathLike


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
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated "
                              f"safetensors file ({err})") from None
    return tensors, metadata


def _torch_load(path: Path) -> Any:
    try:
        # argparse.Namespace: timm's training checkpoints store their arguments in one;
        # it is a plain attribute bag, so allowing it runs no code.
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Refused by the weights-only unpickler: a well-formed pickle that needs Python
        # objects (unsafe), or bytes that are no pickle at all (corrupt)? Read the file's
        # opcodes -- without running them -- to tell which.
        text = str(err)
        names = _unsafe_globals(path)
        if not names and "GLOBAL " in text:  # "Trying to load unsupported GLOBAL mod.name"
            names = [text.split("GLOBAL ", 1)[1].split()[0]]
        if names:
            raise CheckpointError(_unsafe_message(path, names)) from None
        detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if text else ""
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated (not a "
                              f"PyTorch or safetensors file: {detail or 'unpickling failed'})"
                              ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated "
                              f"(not a PyTorch or safetensors file, or cut short: {first})"
                              ) from None


def _unsafe_globals(path: Path) -> list[str]:
    """Python objects the file's pickle would import, read from its opcodes (never run);
    empty when the bytes do not parse as a pickle (a corrupt file, not an unsafe one)."""
    if zipfile.is_zipfile(path):
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # a broken archive: the caller reports it as corrupt
            return []
    referenced = _legacy_pickle_globals(path)
    try:
        from torch._weights_only_unpickler import (
            _get_allowed_globals,
            _get_user_allowed_globals,
        )

        allowed = set(_get_allowed_globals()) | set(_get_user_allowed_globals())
    except ImportError:  # private helpers of torch: fall back to its own namespace
        allowed = {name for name in referenced if name.startswith("torch.")}
    allowed |= {"collections.OrderedDict", f"{argparse.__name__}.Namespace"}
    return sorted(referenced - allowed)


def _legacy_pickle_globals(path: Path, max_pickles: int = 5) -> set[str]:
    """``module.name`` of every GLOBAL in the leading pickles of a non-zip file (the
    legacy ``torch.save`` format is several pickles, then raw storage bytes). Only
    pickles that parse completely count, so random bytes yield nothing."""
    found: set[str] = set()
    with open(path, "rb") as fh:
        for _ in range(max_pickles):
            names: set[str] = set()
            strings: list[str] = []
            try:
                for opcode, arg, _pos in pickletools.genops(fh):
                    if opcode.name == "GLOBAL" and isinstance(arg, str):
                        names.add(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.add(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # not (or no longer) a pickle: stop reading
                break
            found |= names
    return found


def _unsafe_message(path: Path, names: list[str]) -> str:
    found = f" (it references {', '.join(names[:5])})" if names else ""
    return (f"refusing to load checkpoint {path}: unsafe: unpickling it needs arbitrary "
            f"Python objects{found}, which can run code. Only tensors and plain containers are "
            f"loaded (torch.load(weights_only=True)); nothing in the file was executed. If you "
            f"trust the file, extract its state dict in a separate session and save it with "
            f"fastvit.save_checkpoint (or safetensors).")


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


def unwrap(obj: Any, source: str, use_ema: bool) -> tuple[StateDict, dict[str, str]]:
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
                inner, _ = unwrap(inner, f"{source}[{entry!r}]", False)
            return dict(inner), _scalar_metadata(obj)
    what = "EMA weights" if use_ema else "model weights"
    top = ", ".join(repr(k) for k in list(obj)[:10]) or "nothing"
    raise CheckpointError(f"no {what} found in {source}: expected a state dict or one of the "
                          f"entries {', '.join(entries)}; it holds {top}")


def read_state_dict(path: PathLike, *, use_ema: bool = False
                    ) -> tuple[StateDict, dict[str, str]]:
    """Every tensor of a checkpoint file as stored (unwrapped from a training checkpoint,
    keys untouched: a whole CLIP model keeps its text tower), and its metadata."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"checkpoint {path} is not readable (permission denied)")
    if _looks_like_safetensors(path):
        state_dict, metadata = _read_safetensors(path)
        if use_ema:
            raise CheckpointError(f"{path} is a safetensors file holding one set of weights, "
                                  f"not a training checkpoint with EMA weights; drop use_ema")
        return state_dict, metadata
    return unwrap(_torch_load(path), str(path), use_ema)


def read_checkpoint(path: PathLike, *, use_ema: bool = False, convert: bool = True
                    ) -> tuple[StateDict, dict[str, str]]:
    """Weights and metadata of any supported checkpoint file.

    Returns ``(state_dict, metadata)``: the state dict unwrapped, without
    ``module.``/``_orig_mod.`` prefixes and (``convert=True``) renamed to our
    layout; ``metadata`` is the safetensors header metadata, or the plain
    entries of a training checkpoint (``{}`` for a bare state dict).
    """
    path = Path(path)
    state_dict, metadata = read_state_dict(path, use_ema=use_ema)
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


# The preprocessing keys a training run records with its weights (timm's pretrained_cfg names).
PREPROCESSING_KEYS = ("input_size", "crop_pct", "interpolation", "mean", "std")


def _metadata_json(metadata: Mapping[str, Any], key: str, kind: type) -> Any:
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, kind):
        raise CheckpointError(f"checkpoint metadata {key!r} is not a JSON {kind.__name__}")
    return value


def preprocessing_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The input size, crop ratio, interpolation and mean/std a training run recorded
    (``metadata["pretrained_cfg"]``), so a model trained at 64x64 is evaluated, exported
    and served at 64x64; ``{}`` when the file records none."""
    cfg = _metadata_json(metadata, "pretrained_cfg", dict) or {}
    out = {k: tuple(v) if isinstance(v, list) else v
           for k, v in cfg.items() if k in PREPROCESSING_KEYS}
    size = out.get("input_size")
    if size is not None and (len(size) != 3 or not all(isinstance(n, int) and n > 0
                                                         for n in size)):
        raise CheckpointError(f"checkpoint metadata input_size {list(size)} is not "
                              f"[channels, height, width]")
    return out


def val_split_from_metadata(metadata: Mapping[str, Any]) -> tuple[float, int] | None:
    """``(val_fraction, seed)`` of the images a training run held out of ``train/``
    (a folder without ``val/``), so ``evaluate`` can score the same images later."""
    split = _metadata_json(metadata, "val_split", dict)
    if not split:
        return None
    try:
        return float(split["fraction"]), int(split["seed"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("checkpoint metadata 'val_split' needs a fraction and a "
                              "seed") from None
