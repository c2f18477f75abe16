"""``fastvit evaluate`` (alias ``validate``): top-1/top-5 on an ImageFolder split and the
ImageNet robustness sets, of exactly the network ``fastvit export`` ships; for the split
also per-class accuracy, a confusion matrix and the most confident mistakes.

Examples::

    fastvit evaluate --checkpoint runs/t8/best.safetensors --data /data/imagenet
    fastvit evaluate --checkpoint runs/mine/best.safetensors --data my_images --out report/
    fastvit evaluate --checkpoint sa12.pth.tar --robustness imagenet-a=/data/imagenet-a
    fastvit evaluate --model fastvit_t8 --pretrained in1k --data /data/imagenet
    torchrun --nproc-per-node 4 -m fastvit evaluate --checkpoint ... --data ... --json val.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastvit.cli.arguments import (
    add_compute,
    add_data,
    add_model,
    add_outputs,
    default_workers,
    emit_json,
    weights_source,
)
from fastvit.errors import ConfigError
from fastvit.evaluate import folder_class_count, format_table, run_evaluation
from fastvit.pipeline import RANDOM_WEIGHTS, load_model
from fastvit.run.device import cpu_threads, resolve_amp
from fastvit.run.distributed import cleanup, init_distributed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser, whole_model=True)
    parser.add_argument("--num-classes", type=int, metavar="N",
                        help="classifier size (default: the checkpoint's, else the folder's)")
    parser.add_argument("--train-time", action="store_true",
                        help="score the train-time (unfused) network instead of the deploy "
                        "form (fused, BatchNorms folded)")
    parser.add_argument("--no-reparam", dest="train_time", action="old_spelling", const=True,
                        new="--train-time")
    add_data(parser, split="val", batch_size=128,
             data_help="dataset root holding the split folder (DIR/val/<class>/<image>), "
             "WebDataset shards, a datasets folder, Parquet files or hf:ORG/NAME")
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="a folder without val/: score a seeded, stratified F of each class "
                        "of train/ (default: the images the checkpoint's training held out)")
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="input side (default: the checkpoint's training size, else 256)")
    parser.add_argument("--crop-pct", type=float, help="centre-crop ratio (default: the "
                        "checkpoint's, else the variant's 0.9 or 0.95)")
    parser.add_argument("--bad-images", choices=["skip", "error"], default="skip",
                        help="unreadable images: skip and count them, or stop")
    parser.add_argument("--robustness", metavar="SET=DIR[,SET=DIR...]",
                        help="imagenet-a=DIR, imagenet-r=DIR, sketch=DIR, imagenet-c=DIR")
    parser.add_argument("--alexnet-errors", metavar="JSON",
                        help="ImageNet-C normalizer table (default: the shipped AlexNet errors)")
    parser.add_argument("--channels-last", action="store_true")
    add_compute(parser)
    add_outputs(parser, out="folder for confusion_matrix.png and worst_mistakes.png of the "
                "--data split (default: the folder of --json FILE; none without either)")


def main(args: argparse.Namespace) -> int:
    if not args.data and not args.robustness:
        raise ConfigError("nothing to evaluate: pass --data and/or --robustness")
    weights = weights_source(args)
    env = init_distributed(args.device)
    try:
        with cpu_threads(args.threads):
            num_classes = args.num_classes
            if weights is None and num_classes is None and args.data \
                    and not args.robustness:
                num_classes = folder_class_count(args.data, args.split)
            loaded = load_model(args.model, weights, ema=args.ema,
                                fused=not args.train_time, num_classes=num_classes)
            if loaded.source == RANDOM_WEIGHTS and env.is_main:
                print("note: no --checkpoint or --pretrained, evaluating randomly initialized "
                      "weights")
            results = run_evaluation(
                loaded, data=args.data, split=args.split, val_fraction=args.val_fraction,
                robustness=args.robustness,
                batch_size=args.batch_size, workers=_workers(args),
                image_size=args.image_size, crop_pct=args.crop_pct,
                amp_dtype=resolve_amp(args.amp, env.device), channels_last=args.channels_last,
                bad_images=args.bad_images, alexnet_errors=args.alexnet_errors,
                device=env.device, distributed=env.distributed, report_dir=_report_dir(args))
    finally:
        cleanup()
    if env.is_main:
        if args.json != "-":
            print(format_table(results))
        emit_json(args.json, results)
    return 0


def _report_dir(args: argparse.Namespace) -> Path | None:
    """``--out DIR``, else next to ``--json FILE`` (per-class plots of the split)."""
    if args.out:
        return Path(args.out)
    if args.json and args.json != "-":
        return Path(args.json).resolve().parent
    return None


def _workers(args: argparse.Namespace) -> int:
    return default_workers() if args.workers is None else args.workers
