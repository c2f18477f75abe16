"""``fastvit segment train|evaluate|predict``: Semantic FPN with a FastViT backbone.

Examples::

    fastvit segment train --data /data/ADEChallengeData2016 --pretrained sa12.pth.tar \\
        --out runs/seg
    torchrun --nproc-per-node 8 -m fastvit segment train --data ... --out runs/seg
    fastvit segment evaluate --checkpoint runs/seg --data ... --mode slide
    fastvit segment predict --checkpoint runs/seg img.jpg photos/ 'more/*.jpg' --out masks/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastvit.cli.arguments import emit_json
from fastvit.cli.tasks import (
    TASK_FLAG_KEYS,
    add_eval_options,
    add_train_options,
    add_val_options,
    print_train_report,
    recipe_values,
    val_split,
)
from fastvit.run.device import cpu_threads, resolve_amp, resolve_device
from fastvit.run.distributed import cleanup, init_distributed

FLAG_KEYS = {**TASK_FLAG_KEYS, "iters": "schedule.iters", "num_classes": "model.num_classes",
             "crop_size": "data.crop_size", "base_size": "data.base_size"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{train,evaluate,predict}")
    formatter = parser.formatter_class

    train = sub.add_parser("train", help="train Semantic FPN (torchrun for DDP)",
                           formatter_class=formatter)
    train.add_argument("--data", type=Path, required=True,
                       help="ADE20K-layout root (images/SPLIT/*.jpg, annotations/SPLIT/*.png)")
    train.add_argument("--train-split", default="training")
    add_val_options(train, "validation", "split evaluated every run.eval_every_iters "
                    "iterations")
    add_train_options(train, length="iters")
    train.add_argument("--num-classes", type=int)
    train.add_argument("--crop-size", type=int,
                       help="training crop side; the data is scaled to it too (shorter side "
                       "= crop size x U(scale_range)) unless --base-size says otherwise")
    train.add_argument("--base-size", type=int,
                       help="shorter image side before random scaling and at evaluation "
                       "(default: the crop size)")

    ev = sub.add_parser("evaluate", help="mIoU / per-class IoU / pixel accuracy",
                        formatter_class=formatter)
    ev.add_argument("--data", type=Path, required=True)
    add_eval_options(ev, "validation")
    ev.add_argument("--mode", choices=("whole", "slide"), help="default: the recipe's")
    ev.add_argument("--stride", type=int, help="sliding-window stride (default: recipe's)")
    ev.add_argument("--workers", type=int, default=None)
    ev.add_argument("--out", dest="json", action="old_spelling", new="--json FILE")

    pr = sub.add_parser("predict", help="colourized label PNG per image",
                        formatter_class=formatter)
    pr.add_argument("--checkpoint", required=True,
                    help="a checkpoint of segment train, or its run folder (best.pt)")
    pr.add_argument("images", nargs="+", metavar="IMAGE",
                    help="image files, folders (searched recursively) or quoted glob patterns")
    pr.add_argument("--out", type=Path, required=True, help="output folder")
    pr.add_argument("--mode", choices=("whole", "slide"))
    pr.add_argument("--overlay", action="store_true",
                    help="also write NAME_overlay.png (mask blended over the image)")
    pr.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    pr.add_argument("--threads", type=int, metavar="N", help="intra-op CPU threads")


def _train(args: argparse.Namespace) -> int:
    from fastvit.tasks.recipes import load_task_recipe
    from fastvit.tasks.segmentation import engine
    from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE, SegmentationRecipe

    recipe = load_task_recipe(SegmentationRecipe, DEFAULT_RECIPE, args.config,
                              recipe_values(args, FLAG_KEYS), args.overrides)
    report = engine.train(recipe, data_root=args.data, out_dir=args.out,
                          train_split=args.train_split,
                          val_split=val_split(args),
                          device=args.device, resume=args.resume, max_steps=args.max_steps,
                          threads=args.threads, compiled=args.compile)
    print_train_report(report, args.out, engine.summary_line, unit="iter")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fastvit.tasks.segmentation import engine
    from fastvit.tasks.segmentation.data import ADE20KSegmentation, EvalTransform

    env = init_distributed(args.device)
    try:
        with cpu_threads(args.threads):
            loaded = engine.load_segmenter(args.checkpoint, env.device)
            recipe = loaded.recipe
            num_classes = recipe.model.num_classes
            dataset = ADE20KSegmentation(args.data, args.split, num_classes,
                                         EvalTransform(recipe.scale))
            mode = args.mode or recipe.eval.mode
            workers = recipe.data.workers if args.workers is None else args.workers
            metrics = engine.evaluate_segmenter(loaded.model, dataset, env,
                                                num_classes=num_classes, mode=mode,
                                                window=recipe.data.crop_size,
                                                stride=args.stride or recipe.eval.stride,
                                                workers=workers,
                                                amp_dtype=resolve_amp(args.amp, env.device))
    finally:
        cleanup()
    if env.is_main:
        print(f"{args.split} ({len(dataset)} images, {mode}): {engine.summary_line(metrics)}")
        emit_json(args.json, {"checkpoint": str(args.checkpoint), "split": args.split,
                              "mode": mode, **metrics})
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fastvit.tasks.inputs import input_images
    from fastvit.tasks.segmentation.engine import load_segmenter
    from fastvit.tasks.segmentation.predict import predict_label_maps

    images = input_images(args.images)  # a bad input is reported before the model loads
    with cpu_threads(args.threads):
        loaded = load_segmenter(args.checkpoint, resolve_device(args.device))
        predict_label_maps(loaded, images, args.out, mode=args.mode, overlay=args.overlay)
    return 0


def main(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.action](args)
