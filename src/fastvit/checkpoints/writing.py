"""Writing weights in our format: safetensors with self-describing metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastvit.checkpoints.layouts import (
    convert_state_dict,
    fused_state,
    guess_variant,
    in_chans_of,
    num_classes_of,
)
from fastvit.checkpoints.loading import inner_model
from fastvit.checkpoints.reading import PathLike, unwrap
from fastvit.errors import CheckpointError
from fastvit.files import atomic_write
from fastvit.models import list_models

FORMAT_NAME, FORMAT_VERSION = "fastvit", "1"


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

    if isinstance(model_or_state_dict, nn.Module):
        inner = inner_model(model_or_state_dict)
        state_dict = dict(inner.state_dict())
        variant = variant or getattr(inner, "variant", None)
    else:
        state_dict = convert_state_dict(unwrap(model_or_state_dict, "the state dict", False)[0])
    if variant is None:
        score, guessed, _ = guess_variant(state_dict, fused_state(state_dict))[0]
        variant = guessed if score == 1.0 else None
    if variant is not None and variant not in list_models("all"):
        raise CheckpointError(f"unknown variant {variant!r}; choose one of: "
                              f"{', '.join(list_models('all'))}")
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
