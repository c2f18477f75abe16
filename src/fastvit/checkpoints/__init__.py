"""Checkpoints of every layout users hold: read safely, recognise, load, convert, write.

:mod:`~fastvit.checkpoints.reading` opens files without running their code,
:mod:`~fastvit.checkpoints.layouts` recognises and renames key layouts (ours =
timm's, the official release's), :mod:`~fastvit.checkpoints.loading` loads
weights into a model with one readable error when they do not fit, and
:mod:`~fastvit.checkpoints.writing` writes our safetensors format.
"""

from fastvit.checkpoints.layouts import (
    Layout,
    convert_state_dict,
    detect_layout,
    fused_state,
    guess_variant,
    in_chans_of,
    num_classes_of,
    to_official_layout,
)
from fastvit.checkpoints.loading import inner_model, load_checkpoint, load_state_dict_into
from fastvit.checkpoints.reading import (
    class_names_from_metadata,
    preprocessing_from_metadata,
    read_checkpoint,
    read_state_dict,
    val_split_from_metadata,
)
from fastvit.checkpoints.writing import save_checkpoint

__all__ = [
    "Layout",
    "class_names_from_metadata",
    "convert_state_dict",
    "detect_layout",
    "fused_state",
    "guess_variant",
    "in_chans_of",
    "inner_model",
    "load_checkpoint",
    "load_state_dict_into",
    "num_classes_of",
    "preprocessing_from_metadata",
    "read_checkpoint",
    "read_state_dict",
    "save_checkpoint",
    "to_official_layout",
    "val_split_from_metadata",
]
