"""``fastvit info [NAME...]``: the variant table, measured from the models."""

from __future__ import annotations

import argparse

from fastvit.cli.arguments import add_outputs, emit_json
from fastvit.info import format_table, variant_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="variants (default: all)")
    parser.add_argument("--image-size", type=int, default=256, help="input side for GMACs")
    add_outputs(parser)


def main(args: argparse.Namespace) -> int:
    rows = variant_table(args.names or None, args.image_size)
    if args.json == "-":
        emit_json("-", rows)
        return 0
    print(format_table(rows))
    emit_json(args.json, rows)
    return 0
