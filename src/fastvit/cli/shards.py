"""``fastvit shards DIR OUT``: an ImageFolder or a ``datasets`` folder as WebDataset shards.

    fastvit shards /data/my_images /data/my_shards --shard-size 1000
    fastvit train --data /data/my_shards --model fastvit_t8 ...
"""

from __future__ import annotations

import argparse

from fastvit.data.shard_writer import write_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="DIR", help="ImageFolder root (train/ + val/, or "
                        "class folders) or a folder written by datasets' save_to_disk")
    parser.add_argument("out", metavar="OUT", help="folder for train-NNNNNN.tar, "
                        "val-NNNNNN.tar and shards.json (class names, sample counts)")
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N",
                        help="samples per shard (default: 1000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the order the training samples are written in")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    written = write_shards(args.source, args.out, shard_size=args.shard_size, seed=args.seed,
                           progress=not args.no_progress)
    for split in ("train", "val"):
        shards = [name for name in written.counts if name.startswith(f"{split}-")]
        if shards:
            print(f"{split}: {written.total(split)} samples in {len(shards)} shard(s)")
    print(f"{len(written.classes)} classes; wrote {written.out_dir} (train with "
          f"--data {written.out_dir})")
    return 0
