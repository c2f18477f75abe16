"""``fastvit detect train|evaluate|predict``: Mask R-CNN with a FastViT backbone on COCO.

Examples::

    fastvit detect train --data /data/coco --pretrained fastvit_sa12.pth.tar --out runs/det
    fastvit detect train --config maskrcnn_small --train-images imgs/ --train-ann train.json \
        --val-images imgs/ --val-ann val.json --model fastvit_t8 --image-size 256 --out runs/s
    torchrun --nproc-per-node 8 -m fastvit detect train --data /data/coco --out runs/det
    fastvit detect evaluate --checkpoint runs/det --data /data/coco --json det_val.json
    fastvit detect predict --checkpoint runs/det img1.jpg photos/ 'more/*.jpg' --out preds/
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
from fastvit.errors import ConfigError
from fastvit.run.device import cpu_threads, resolve_amp
from fastvit.run.distributed import cleanup, init_distributed

TRAIN_DESCRIPTION = """\
Train Mask R-CNN with a FastViT backbone. The default recipe is the paper's COCO 1x
schedule with the standard heads and images resized to shorter side 800.

Small data sets or a CPU: --config maskrcnn_small (heads 4x narrower, fewer RoIs and
proposals, shorter side 320: several times faster per iteration), with --image-size N
for the scale of your images. Head sizes are recipe keys, e.g. --set head.fpn_channels=64
--set head.box_dim=256 --set head.mask_channels=64 --set head.rois_per_image=128
--set head.rpn_proposals_train=500 (docs/tasks.md). The run's first lines state them."""

FLAG_KEYS = {**TASK_FLAG_KEYS, "epochs": "schedule.epochs", "min_size": "data.min_size",
             "max_size": "data.max_size"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{train,evaluate,predict}")
    formatter = parser.formatter_class

    train = sub.add_parser(
        "train", help="train Mask R-CNN (torchrun for DDP)", formatter_class=formatter,
        description=TRAIN_DESCRIPTION)
    _add_data(train, "train", default_split="train2017")
    add_val_options(train, "val2017", "split evaluated after each epoch (with --data)")
    train.add_argument("--val-images", type=Path, help="validation image folder")
    train.add_argument("--val-ann", type=Path, help="validation annotation JSON")
    add_train_options(train)
    train.add_argument("--image-size", type=int, metavar="N",
                       help="scale of the data: shorter side N fed to the network, longer "
                       "side at most N x 1333/800 (unless --max-size)")
    train.add_argument("--min-size", type=int, help="shorter side fed to the network")
    train.add_argument("--max-size", type=int, help="longer side limit")

    ev = sub.add_parser("evaluate", help="COCO box / mask AP of a trained model",
                        formatter_class=formatter)
    _add_data(ev, "", default_split=None)
    add_eval_options(ev, "val2017")
    ev.add_argument("--batch-size", type=int, default=2)
    ev.add_argument("--workers", type=int, default=None)
    ev.add_argument("--out", dest="json", action="old_spelling", new="--json FILE")

    pr = sub.add_parser("predict", help="detect objects in images, draw them as PNG",
                        formatter_class=formatter)
    pr.add_argument("--checkpoint", required=True,
                    help="a checkpoint of detect train, or its run folder (best.pt)")
    pr.add_argument("images", nargs="+", metavar="IMAGE",
                    help="image files, folders (searched recursively) or quoted glob patterns")
    pr.add_argument("--out", type=Path, required=True, help="folder for PNGs + predictions.json")
    pr.add_argument("--score-threshold", type=float, default=0.5)
    pr.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    pr.add_argument("--threads", type=int, metavar="N", help="intra-op CPU threads")


def _add_data(p: argparse.ArgumentParser, prefix: str, default_split: str | None) -> None:
    dash = f"{prefix}-" if prefix else ""
    p.add_argument("--data", type=Path, help="COCO root (annotations/instances_SPLIT.json, SPLIT/)")
    if default_split is not None:
        p.add_argument(f"--{dash}split", default=default_split)
    p.add_argument(f"--{dash}images", type=Path, help="image folder (instead of --data)")
    p.add_argument(f"--{dash}ann", type=Path, help="annotation JSON (instead of --data)")


def _paths(args: argparse.Namespace, images: Path | None, ann: Path | None,
           split: str) -> tuple[Path, Path]:
    from fastvit.tasks.detection.data import split_paths

    if ann is not None:
        if images is None:
            raise ConfigError("an annotation file needs its image folder too (--*images)")
        return images, ann
    if args.data is None:
        raise ConfigError("give --data COCO_ROOT or an image folder + annotation file "
                          "(--*-images/--*-ann; for training also the validation pair, "
                          "or --no-val)")
    return split_paths(args.data, split)


def _train(args: argparse.Namespace) -> int:
    from fastvit.tasks.detection import engine
    from fastvit.tasks.detection.recipe import DEFAULT_RECIPE, MAX_SIZE_RATIO, DetectionRecipe
    from fastvit.tasks.recipes import load_task_recipe

    values = recipe_values(args, FLAG_KEYS)
    if args.image_size is not None:
        if args.min_size is not None:
            raise ConfigError("--image-size sets --min-size: give one")
        values["data.min_size"] = args.image_size
        values["data.max_size"] = args.max_size or round(args.image_size * MAX_SIZE_RATIO)
    recipe = load_task_recipe(DetectionRecipe, DEFAULT_RECIPE, args.config, values,
                              args.overrides)
    train_images, train_ann = _paths(args, args.train_images, args.train_ann, args.train_split)
    val_images = val_ann = None
    split = val_split(args)
    if split is not None:
        val_images, val_ann = _paths(args, args.val_images, args.val_ann, split)
    report = engine.train(recipe, train_images=train_images, train_ann=train_ann,
                          val_images=val_images, val_ann=val_ann, out_dir=args.out,
                          device=args.device, resume=args.resume, max_steps=args.max_steps,
                          threads=args.threads, compiled=args.compile)
    print_train_report(report, args.out, engine.summary_line)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fastvit.tasks.detection import engine
    from fastvit.tasks.detection.data import coco_dataset

    env = init_distributed(args.device)
    try:
        with cpu_threads(args.threads):
            loaded = engine.load_detector(args.checkpoint, env.device)
            images, ann = _paths(args, args.images, args.ann, args.split)
            dataset = coco_dataset(images, ann, train=False)
            if engine.base_dataset(dataset).category_ids != loaded.category_ids:
                raise ConfigError(f"the categories of {ann} differ from those the model was "
                                  f"trained on")
            workers = loaded.recipe.data.workers if args.workers is None else args.workers
            metrics = engine.evaluate_detector(loaded.model, dataset, env,
                                               batch_size=args.batch_size, workers=workers,
                                               amp_dtype=resolve_amp(args.amp, env.device),
                                               verbose=False)
    finally:
        cleanup()
    if env.is_main:
        print(f"{args.split} ({len(dataset)} images): {engine.summary_line(metrics)}")
        emit_json(args.json, {"checkpoint": str(args.checkpoint), "annotations": str(ann),
                              **metrics})
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fastvit.run.device import resolve_device
    from fastvit.tasks.detection.engine import load_detector
    from fastvit.tasks.detection.predict import predict_detections
    from fastvit.tasks.inputs import input_images

    images = input_images(args.images)  # a bad input is reported before the model loads
    with cpu_threads(args.threads):
        loaded = load_detector(args.checkpoint, resolve_device(args.device))
        predict_detections(loaded, images, args.out, score_threshold=args.score_threshold)
    return 0


def main(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.action](args)
