"""``fastvit search``: rank the images of an embeddings file by a text or an example image.

The file written by ``fastvit embed`` names the model and its weights; the query is
embedded with them (``--checkpoint`` / ``--pretrained`` point elsewhere when the file
has moved) and the images are ranked by cosine similarity.

Examples::

    fastvit search photos.safetensors "a red car on a beach" --top 5
    fastvit search photos.safetensors --image query.jpg --json hits.json
    fastvit search shots.npy "a dog" --checkpoint /new/place/s3.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastvit.cli.arguments import CLIP_PRETRAINED_HELP, add_compute, add_outputs, emit_json
from fastvit.errors import ConfigError
from fastvit.run.device import cpu_threads, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="INDEX",
                        help="embeddings written by fastvit embed (.safetensors or .npy)")
    parser.add_argument("query", nargs="?", metavar="TEXT", help="what to look for, in words")
    parser.add_argument("--image", metavar="IMG", help="look for images like this one instead")
    parser.add_argument("--top", type=int, default=10, metavar="K", help="how many to show")
    group = parser.add_argument_group("model (default: what the index records)")
    group.add_argument("--checkpoint", metavar="FILE",
                       help="the open_clip whole-model file the index was made with")
    group.add_argument("--pretrained", metavar="TAG|hf-hub:ID", help=CLIP_PRETRAINED_HELP)
    add_compute(parser, amp=False)
    add_outputs(parser)


def main(args: argparse.Namespace) -> int:
    from fastvit.clip import image_query, load_clip, read_index, search, text_query
    from fastvit.clip.search import check_model, format_hits

    if (args.query is None) == (args.image is None):
        raise ConfigError("give a search TEXT or --image IMG (one of the two)")
    if args.top < 1:
        raise ConfigError("--top must be >= 1")
    index = read_index(args.index)
    if args.checkpoint and args.pretrained:
        raise ConfigError("give --checkpoint FILE or --pretrained TAG, not both")
    if args.checkpoint or args.pretrained:
        checkpoint, pretrained = args.checkpoint, args.pretrained
    else:
        checkpoint, pretrained = index.checkpoint, index.pretrained
        if checkpoint and not Path(checkpoint).is_file():
            raise ConfigError(f"the checkpoint {args.index} was made with is gone "
                              f"({checkpoint}): pass --checkpoint FILE (or --pretrained TAG)")
    with cpu_threads(args.threads):
        clip = load_clip(index.model, checkpoint, pretrained, text=args.query is not None)
        clip.to(resolve_device(args.device))
        check_model(index, clip)
        query = (text_query(clip, args.query) if args.query is not None
                 else image_query(clip, args.image, index.preprocessing))
    hits = search(index, query, args.top)
    if args.json != "-":
        print(format_hits(hits))
    emit_json(args.json, {"index": args.index, "model": index.model,
                          "query": args.query if args.query is not None else
                          {"image": args.image}, "hits": hits})
    return 0
