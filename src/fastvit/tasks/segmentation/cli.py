"""``fastvit segment train|evaluate|predict``: Semantic FPN with a FastViT backbone.

Examples::

    fastvit segment train --data /data/ADEChallengeData2016 --pretrained sa12.pth.tar \\
        --recipe configs/tasks/semfpn_fastvit_sa12_ade20k_40k.yaml --out runs/seg
    torchrun --nproc_per_node 8 -m fastvit segment train --data ... --out runs/seg
    fastvit segment evaluate --checkpoint runs/seg/checkpoint.pt --data ... --mode slide
    fastvit segment predict --checkpoint runs/seg/checkpoint.pt img.jpg --out masks/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fastvit.tasks import common
from fastvit.tasks.segmentation import engine
from fastvit.tasks.segmentation.data import ADE20KSegmentation, EvalTransform, image_transform
from fastvit.tasks.segmentation.recipe import SegmentationRecipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{train,evaluate,predict}")

    train = sub.add_parser("train", help="train Semantic FPN (torchrun for DDP)")
    train.add_argument("--data", type=Path, required=True,
                       help="ADE20K-layout root (images/SPLIT/*.jpg, annotations/SPLIT/*.png)")
    train.add_argument("--train-split", default="training")
    train.add_argument("--val-split", default="validation")
    train.add_argument("--no-val", action="store_true", help="skip evaluation during training")
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument("--recipe", type=Path,
                       help="recipe YAML (default: the paper's ADE20K setting, "
                            "configs/tasks/semfpn_fastvit_sa12_ade20k_40k.yaml)")
    train.add_argument("--model", help="FastViT variant (recipe: fastvit_sa12)")
    train.add_argument("--pretrained", help="ImageNet backbone checkpoint (any layout)")
    train.add_argument("--num-classes", type=int)
    train.add_argument("--iters", type=int)
    train.add_argument("--batch-size", type=int, help="crops per process")
    train.add_argument("--lr", type=float)
    train.add_argument("--crop-size", type=int)
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override any recipe option, e.g. --set eval_mode=slide")
    train.add_argument("--resume", type=Path, help="continue from a checkpoint.pt")
    common.add_runtime_arguments(train)

    ev = sub.add_parser("evaluate", help="mIoU / per-class IoU / pixel accuracy")
    ev.add_argument("--checkpoint", type=Path, required=True)
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--split", default="validation")
    ev.add_argument("--mode", choices=("whole", "slide"), help="default: the recipe's")
    ev.add_argument("--stride", type=int, help="sliding-window stride (default: recipe's)")
    ev.add_argument("--out", type=Path, help="write the metrics as JSON here")
    common.add_runtime_arguments(ev)

    pr = sub.add_parser("predict", help="colourized label PNG per image")
    pr.add_argument("--checkpoint", type=Path, required=True)
    pr.add_argument("images", nargs="+", type=Path)
    pr.add_argument("--out", type=Path, required=True, help="output folder")
    pr.add_argument("--mode", choices=("whole", "slide"))
    pr.add_argument("--overlay", action="store_true",
                    help="also write NAME_overlay.png (mask blended over the image)")
    pr.add_argument("--device", default=None)


def _train(args: argparse.Namespace) -> int:
    overrides = {"model": args.model, "pretrained": args.pretrained,
                 "num_classes": args.num_classes, "iters": args.iters,
                 "batch_size": args.batch_size, "lr": args.lr, "crop_size": args.crop_size,
                 "amp": args.amp, "workers": args.workers, **common.parse_sets(args.set)}
    recipe = common.load_recipe(SegmentationRecipe, args.recipe, overrides)
    report = engine.train(recipe, data_root=args.data, out_dir=args.out,
                          train_split=args.train_split,
                          val_split=None if args.no_val else args.val_split,
                          device=args.device, resume=args.resume)
    if report["eval"]:
        last = report["eval"][-1]
        print(f"iter {last['step']}: mIoU {last['mIoU']:.4f}, aAcc {last['aAcc']:.4f}")
    print(f"wrote {args.out / 'checkpoint.pt'} and {args.out / 'metrics.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    runtime = common.init_runtime(args.device)
    try:
        model, recipe = engine.load_segmenter(args.checkpoint, runtime.device)
        dataset = ADE20KSegmentation(args.data, args.split, recipe.num_classes,
                                     EvalTransform(recipe.base_size))
        mode = args.mode or recipe.eval_mode
        workers = recipe.workers if args.workers is None else args.workers
        metrics = engine.evaluate(model, dataset, runtime, num_classes=recipe.num_classes,
                                  mode=mode, window=recipe.crop_size,
                                  stride=args.stride or recipe.eval_stride, workers=workers,
                                  amp=bool(args.amp))
        if runtime.is_main:
            print(f"{args.split} ({len(dataset)} images, {mode}): mIoU {metrics['mIoU']:.4f}  "
                  f"aAcc {metrics['aAcc']:.4f}  mAcc {metrics['mAcc']:.4f}")
            if args.out is not None:
                common.write_json(args.out, {"checkpoint": str(args.checkpoint),
                                             "split": args.split, "mode": mode, **metrics})
                print(f"wrote {args.out}")
    finally:
        common.shutdown(runtime)
    return 0


def palette(num_classes: int) -> np.ndarray:
    """A fixed, well-spread colour per class (uint8, ``num_classes x 3``)."""
    rng = np.random.default_rng(20231)
    colours = rng.integers(0, 256, size=(num_classes, 3), dtype=np.uint8)
    return colours


@torch.no_grad()
def _predict(args: argparse.Namespace) -> int:
    device = common.init_runtime(args.device).device
    model, recipe = engine.load_segmenter(args.checkpoint, device)
    to_input = image_transform(recipe.base_size)
    colours = palette(recipe.num_classes)
    for path in args.images:
        image = common.read_rgb(path)
        x = to_input(image).unsqueeze(0).to(device)
        logits = engine.infer_logits(model, x, args.mode or recipe.eval_mode,
                                     recipe.crop_size, recipe.eval_stride)
        logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear",
                               align_corners=False)
        labels = logits.argmax(1)[0].cpu().numpy()
        mask = Image.fromarray(colours[labels])
        png = args.out / f"{path.stem}.png"
        common.save_png(mask, png)
        line = f"{path}: {len(np.unique(labels))} classes -> {png}"
        if args.overlay:
            overlay = Image.blend(image, mask, 0.5)
            common.save_png(overlay, args.out / f"{path.stem}_overlay.png")
            line += f" (+ {path.stem}_overlay.png)"
        print(line)
    return 0


def main(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.action](args)
