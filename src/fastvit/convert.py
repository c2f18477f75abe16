"""``fastvit convert SRC DST``: any supported checkpoint -> our safetensors format.

The weights are loaded into a real model of the recognised (or named) variant,
so a converted file is known to load; ``--fuse`` reparameterizes before saving.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from fastvit.checkpoint import (
    class_names_from_metadata,
    load_state_dict_into,
    read_checkpoint,
    save_checkpoint,
)
from fastvit.checkpoint_layouts import (
    convert_state_dict,
    detect_layout,
    fused_state,
    guess_variant,
    in_chans_of,
    num_classes_of,
)
from fastvit.errors import CheckpointError, ConfigError
from fastvit.model import create_model, list_models
from fastvit.reparam import is_fused, reparameterize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="checkpoint to read (safetensors, .pt, .pth, "
                        ".pth.tar; ours, timm's or the official release's layout)")
    parser.add_argument("dst", metavar="DST", help="safetensors file to write")
    parser.add_argument("--model", choices=list_models(), metavar="NAME",
                        help="variant of the weights (default: recognised from keys and shapes)")
    parser.add_argument("--fuse", action="store_true",
                        help="reparameterize: write the fused inference form")
    parser.add_argument("--num-classes", type=int, metavar="N",
                        help="classifier size: must match the file's, or 0 to drop the "
                        "classifier (default: read from the file)")
    parser.add_argument("--ema", action="store_true",
                        help="take the EMA weights of a training checkpoint")


def _pick_variant(state_dict: dict, metadata: dict, requested: str | None, src: str) -> str:
    if requested:
        return requested
    named = metadata.get("variant") or metadata.get("arch")
    if named in list_models():
        return named
    ranked = guess_variant(state_dict, fused_state(state_dict))
    score, name, _ = ranked[0]
    if score < 1.0:
        raise ConfigError(f"cannot tell which variant {src} holds (closest: {name}, {score:.0%} "
                          f"of keys and shapes match); pass --model NAME")
    return name


def main(args: argparse.Namespace) -> int:
    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"DST must be a .safetensors file, got {dst}")
    raw, metadata = read_checkpoint(args.src, use_ema=args.ema, convert=False)
    layout = detect_layout(raw)
    state_dict = convert_state_dict(raw)
    variant = _pick_variant(state_dict, metadata, args.model, args.src)
    file_classes = num_classes_of(state_dict)
    has_head = any(k.startswith("final_conv.") for k in state_dict)
    num_classes = file_classes or 0
    if args.num_classes is not None and args.num_classes != num_classes:
        if args.num_classes != 0:
            has = f"a {num_classes}-class classifier" if num_classes else "no classifier"
            raise ConfigError(f"{args.src} has {has}, not {args.num_classes} classes: omit "
                              f"--num-classes, or pass 0 to drop the classifier")
        num_classes = 0
    model = create_model(variant, num_classes=num_classes, in_chans=in_chans_of(state_dict) or 3,
                         inference_mode=bool(layout.fused), features_only=not has_head)
    with warnings.catch_warnings():  # a fused file fusing the model is expected here
        warnings.simplefilter("ignore", UserWarning)
        source = args.src + (" (official layout)" if layout.name == "official" else "")
        model = load_state_dict_into(model, state_dict, source=source, metadata=metadata)
    if args.fuse and not is_fused(model):
        model = reparameterize(model, inplace=True)
    try:
        class_names = class_names_from_metadata(metadata)
    except CheckpointError:
        class_names = None
    if class_names is not None and len(class_names) != num_classes:
        class_names = None
    extra = {k: v for k, v in metadata.items()
             if k not in ("format", "format_version", "variant", "fused", "num_classes",
                          "in_chans", "class_names")}
    extra["converted_from"] = layout.describe()
    save_checkpoint(model, dst, variant=variant, class_names=class_names, metadata=extra)
    form = "fused" if is_fused(model) else "train-time"
    head = f"{num_classes} classes" if has_head else "features only (no head)"
    print(f"wrote {dst}: {variant}, {form}, {head}, from {args.src} ({layout.describe()})")
    return 0
