"""``fastvit push DIR|CHECKPOINT --repo ORG/NAME``: publish a model on the Hugging Face Hub.

A train-time checkpoint (any layout) is first written as a
timm-compatible folder (``config.json``, ``model.safetensors``, a README model
card; see :func:`fastvit.save_pretrained`); a folder is uploaded as it is.
Needs ``huggingface_hub`` (``pip install 'fastvit[hub]'``) and a login
(``hf auth login`` or ``HF_TOKEN``). ``--dry-run --out DIR`` only writes the folder.

Examples::

    fastvit push runs/t8/best.safetensors --repo me/fastvit_t8-flowers --metric top1=91.3
    fastvit push runs/t8/best.safetensors --out hub_folder --dry-run
    timm.create_model("hf-hub:me/fastvit_t8-flowers", pretrained=True)   # then, anywhere
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastvit.errors import ConfigError
from fastvit.models import list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="DIR|CHECKPOINT",
                        help="a save_pretrained folder, or a checkpoint to publish")
    parser.add_argument("--repo", metavar="ORG/NAME", help="Hub repository (created if needed)")
    parser.add_argument("--model", metavar="NAME", choices=list_models("all"),
                        help="variant of the checkpoint (default: the one it names)")
    parser.add_argument("--private", action="store_true", help="create a private repository")
    parser.add_argument("--message", default="Upload FastViT model", help="commit message")
    parser.add_argument("--dataset", help="training data, for the model card")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE",
                        help="a result for the model card, e.g. top1=76.2 (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="also keep the folder written for a "
                        "checkpoint here")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the folder (--out) and upload nothing")


def _metrics(pairs: list[str]) -> dict[str, float]:
    metrics = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            metrics[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--metric takes NAME=NUMBER, got {pair!r}")
    return metrics


def main(args: argparse.Namespace) -> int:
    from fastvit.pipeline import load_model
    from fastvit.publish import push_to_hub, save_pretrained

    metrics = _metrics(args.metric)
    if args.dry_run and not args.out:
        raise ConfigError("--dry-run needs --out DIR (where to write the folder)")
    if not args.dry_run and not args.repo:
        raise ConfigError("--repo ORG/NAME is required (or --dry-run --out DIR)")
    source: object = args.source
    if args.out:
        if Path(args.source).is_dir():
            raise ConfigError("--out is for a checkpoint; the folder is already one")
        loaded = load_model(args.model, checkpoint=args.source, fused=False)
        source = save_pretrained(loaded, args.out, repo_id=args.repo, dataset=args.dataset,
                                 metrics=metrics)
        print(f"wrote {source}")
    if args.dry_run:
        return 0
    url = push_to_hub(source, args.repo, private=args.private, commit_message=args.message,
                      variant=args.model, metrics=metrics, dataset=args.dataset)
    print(f"pushed to {url}")
    return 0
