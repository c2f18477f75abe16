"""``fastvit embed``: the image embeddings of a MobileCLIP image tower, written to one file.

The embeddings are L2-normalized, one row per image; the file records the model, its
weights and the preprocessing, so ``fastvit search`` embeds its queries the same way.
Only the image tower is loaded (no open_clip needed for a file or a registry tag).

Examples::

    fastvit embed photos/ --model MobileCLIP2-S0 --pretrained dfndr2b --out photos.safetensors
    fastvit embed 'shots/**/*.jpg' --model MobileCLIP2-S3 --checkpoint s3.safetensors \\
        --out shots.npy   # + shots.json: the image paths, model and preprocessing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastvit.cli.arguments import add_clip_model, add_compute, add_image_inputs, writing
from fastvit.errors import ConfigError
from fastvit.run.device import cpu_threads, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_inputs(parser, unreadable="skipped (and listed in the file)")
    add_clip_model(parser)
    parser.add_argument("--out", metavar="FILE", required=True,
                        help="FILE.safetensors, or FILE.npy with a sidecar FILE.json")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="images decoded and embedded at a time")
    add_compute(parser, amp=False)


def main(args: argparse.Namespace) -> int:
    from fastvit.clip import embed_images, load_clip, write_index
    from fastvit.clip.index import check_index_path
    from fastvit.tasks.inputs import found_images

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    check_index_path(args.out)
    files, found = found_images(args.images, "embed")  # before any model
    checkpoint = str(Path(args.checkpoint).expanduser().resolve()) if args.checkpoint else None
    with cpu_threads(args.threads):
        device = resolve_device(args.device)
        clip = load_clip(args.model, args.checkpoint, args.pretrained, text=False)
        index = embed_images(clip, files, batch_size=args.batch_size, skippable=found,
                             device=device, checkpoint=checkpoint, pretrained=args.pretrained)
    with writing("--out", args.out):
        written = write_index(index, args.out)
    skipped = f", {len(index.skipped)} unreadable skipped" if index.skipped else ""
    print(f"wrote {' and '.join(map(str, written))}: {len(index.paths)} images x "
          f"{index.embeddings.shape[1]} dimensions ({clip.name}{skipped})", file=sys.stderr)
    return 0
