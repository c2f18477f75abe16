"""``fastvit demo``: the main job behind ``make demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastvit.demo import run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), metavar="DIR",
                        help="folder for the reports")
    parser.add_argument("--variants", nargs="*", default=None, metavar="NAME",
                        help="variants for the table (default: all seven)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model")
    parser.add_argument("--epochs", type=int, default=None,
                        help="digits training epochs (default: the demo recipe's)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for the latency columns (1 is stable on a "
                        "shared machine, where extra OpenMP threads thrash)")
    parser.add_argument("--skip-training", action="store_true")


def main(args: argparse.Namespace) -> int:
    run_demo(args.out, variants=args.variants, image_size=args.image_size, runs=args.runs,
             epochs=args.epochs, threads=args.threads, skip_training=args.skip_training)
    return 0
