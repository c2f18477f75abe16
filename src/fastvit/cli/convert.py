"""``fastvit convert SRC DST``: any supported checkpoint -> our safetensors format."""

from __future__ import annotations

import argparse

from fastvit.convert import convert_checkpoint
from fastvit.models import list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="checkpoint to read (safetensors, .pt, .pth, "
                        ".pth.tar; ours, timm's or the official release's layout)")
    parser.add_argument("dst", metavar="DST", help="safetensors file to write")
    parser.add_argument("--model", choices=list_models("all"), metavar="NAME",
                        help="variant of the weights (default: read from the file's metadata "
                        "or recognised from its keys and shapes)")
    parser.add_argument("--fuse", action="store_true",
                        help="reparameterize: write the fused inference form")
    parser.add_argument("--num-classes", type=int, metavar="N",
                        help="classifier size: must match the file's, or 0 to drop the "
                        "classifier (default: the file's)")
    parser.add_argument("--ema", action="store_true",
                        help="take the EMA weights of a training checkpoint")


def main(args: argparse.Namespace) -> int:
    result = convert_checkpoint(args.src, args.dst, variant=args.model, fuse=args.fuse,
                                num_classes=args.num_classes, ema=args.ema)
    print(result.summary())
    return 0
