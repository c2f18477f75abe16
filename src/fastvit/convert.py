"""Any supported checkpoint -> our safetensors format (``fastvit convert``).

The weights are loaded into a real model of the recognised (or named) variant
through :func:`fastvit.load_model`, so a converted file is known to load;
``fuse`` reparameterizes before saving.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastvit.checkpoints import save_checkpoint
from fastvit.errors import ConfigError
from fastvit.models import is_fused
from fastvit.pipeline import load_model

# metadata keys save_checkpoint writes itself; the rest of the source's metadata is kept
_OWN_KEYS = ("format", "format_version", "variant", "fused", "num_classes", "in_chans",
             "class_names")


@dataclass
class Converted:
    path: Path
    variant: str
    fused: bool
    num_classes: int  # 0: no classifier
    features_only: bool
    source: str
    layout: str

    def summary(self) -> str:
        form = "fused" if self.fused else "train-time"
        head = ("features only (no head)" if self.features_only
                else f"{self.num_classes} classes")
        return (f"wrote {self.path}: {self.variant}, {form}, {head}, from {self.source} "
                f"({self.layout})")


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                       variant: str | None = None, fuse: bool = False,
                       num_classes: int | None = None, ema: bool = False) -> Converted:
    """Read ``src`` (any layout), check it loads into ``variant``, write ``dst``.

    ``num_classes`` must match the file's classifier, or be 0 to drop the
    classifier. The file's class names and other metadata are carried over.
    """
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"DST must be a .safetensors file, got {dst}")
    loaded = load_model(variant, checkpoint=src, ema=ema, fused=True if fuse else None,
                        fold_bn=False, num_classes=num_classes)
    model = loaded.model
    extra = {k: v for k, v in loaded.metadata.items() if k not in _OWN_KEYS}
    extra["converted_from"] = loaded.layout
    save_checkpoint(model, dst, variant=loaded.variant, class_names=loaded.class_names,
                    metadata=extra)
    return Converted(dst, loaded.variant, is_fused(model), model.num_classes if model.head
                     is not None else 0, model.features_only, str(src), loaded.layout or "")
