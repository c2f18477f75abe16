"""``fastvit detect train|evaluate|predict``: Mask R-CNN with a FastViT backbone on COCO.

Examples::

    fastvit detect train --data /data/coco --pretrained fastvit_sa12.pth.tar \\
        --recipe configs/tasks/maskrcnn_fastvit_sa12_coco_1x.yaml --out runs/det
    torchrun --nproc_per_node 8 -m fastvit detect train --data /data/coco ...
    fastvit detect evaluate --checkpoint runs/det/checkpoint.pt --data /data/coco
    fastvit detect predict --checkpoint runs/det/checkpoint.pt img1.jpg --out preds/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from fastvit.errors import ConfigError
from fastvit.tasks import common
from fastvit.tasks.detection import engine
from fastvit.tasks.detection.data import coco_dataset, split_paths
from fastvit.tasks.detection.recipe import DetectionRecipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{train,evaluate,predict}")

    train = sub.add_parser("train", help="train Mask R-CNN (torchrun for DDP)")
    _add_data(train, "train", default_split="train2017")
    train.add_argument("--val-split", default="val2017",
                       help="split evaluated after each epoch (with --data)")
    train.add_argument("--val-images", type=Path, help="validation image folder")
    train.add_argument("--val-ann", type=Path, help="validation annotation JSON")
    train.add_argument("--no-val", action="store_true", help="skip evaluation during training")
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument("--recipe", type=Path,
                       help="recipe YAML (default: the paper's 1x schedule, "
                            "configs/tasks/maskrcnn_fastvit_sa12_coco_1x.yaml)")
    train.add_argument("--model", help="FastViT variant (recipe: fastvit_sa12)")
    train.add_argument("--pretrained", help="ImageNet backbone checkpoint (any layout)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="images per process")
    train.add_argument("--lr", type=float)
    train.add_argument("--min-size", type=int, help="shorter side fed to the network")
    train.add_argument("--max-size", type=int, help="longer side limit")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override any recipe option, e.g. --set frozen_stages=1")
    train.add_argument("--resume", type=Path, help="continue from a checkpoint.pt")
    common.add_runtime_arguments(train)

    ev = sub.add_parser("evaluate", help="COCO box / mask AP of a trained model")
    ev.add_argument("--checkpoint", type=Path, required=True)
    _add_data(ev, "", default_split="val2017")
    ev.add_argument("--batch-size", type=int, default=2)
    ev.add_argument("--out", type=Path, help="write the metrics as JSON here")
    common.add_runtime_arguments(ev)

    pr = sub.add_parser("predict", help="detect objects in images, draw them as PNG")
    pr.add_argument("--checkpoint", type=Path, required=True)
    pr.add_argument("images", nargs="+", type=Path)
    pr.add_argument("--out", type=Path, required=True, help="folder for PNGs + predictions.json")
    pr.add_argument("--score-threshold", type=float, default=0.5)
    pr.add_argument("--device", default=None)


def _add_data(p: argparse.ArgumentParser, prefix: str, default_split: str) -> None:
    dash = f"{prefix}-" if prefix else ""
    p.add_argument("--data", type=Path, help="COCO root (annotations/instances_SPLIT.json, SPLIT/)")
    p.add_argument(f"--{dash}split", default=default_split)
    p.add_argument(f"--{dash}images", type=Path, help="image folder (instead of --data)")
    p.add_argument(f"--{dash}ann", type=Path, help="annotation JSON (instead of --data)")


def _paths(args: argparse.Namespace, images: Path | None, ann: Path | None,
           split: str) -> tuple[Path, Path]:
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
    overrides = {"model": args.model, "pretrained": args.pretrained, "epochs": args.epochs,
                 "batch_size": args.batch_size, "lr": args.lr, "min_size": args.min_size,
                 "max_size": args.max_size, "amp": args.amp, "workers": args.workers,
                 **common.parse_sets(args.set)}
    recipe = common.load_recipe(DetectionRecipe, args.recipe, overrides)
    train_images, train_ann = _paths(args, args.train_images, args.train_ann, args.train_split)
    val_images = val_ann = None
    if not args.no_val:
        val_images, val_ann = _paths(args, args.val_images, args.val_ann, args.val_split)
    report = engine.train(recipe, train_images=train_images, train_ann=train_ann,
                          val_images=val_images, val_ann=val_ann, out_dir=args.out,
                          device=args.device, resume=args.resume)
    if report["eval"]:
        last = report["eval"][-1]
        print(f"epoch {last['epoch']}: box AP {last['bbox']['AP']:.4f}, "
              f"mask AP {last['segm']['AP']:.4f}")
    print(f"wrote {args.out / 'checkpoint.pt'} and {args.out / 'metrics.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    runtime = common.init_runtime(args.device)
    try:
        model, meta = engine.load_detector(args.checkpoint, runtime.device)
        images, ann = _paths(args, args.images, args.ann, args.split)
        dataset = coco_dataset(images, ann, train=False)
        if engine.base_dataset(dataset).category_ids != meta["category_ids"]:
            raise ConfigError(f"the categories of {ann} differ from those the model was "
                              f"trained on")
        recipe = meta["recipe"]
        workers = recipe.workers if args.workers is None else args.workers
        metrics = engine.evaluate(model, dataset, runtime, batch_size=args.batch_size,
                                  workers=workers, amp=bool(args.amp))
        if runtime.is_main and args.out is not None:
            common.write_json(args.out, {"checkpoint": str(args.checkpoint),
                                         "annotations": str(ann), **metrics})
            print(f"wrote {args.out}")
    finally:
        common.shutdown(runtime)
    return 0


@torch.no_grad()
def _predict(args: argparse.Namespace) -> int:
    device = common.init_runtime(args.device).device
    model, meta = engine.load_detector(args.checkpoint, device)
    names = meta["class_names"]
    palette = _palette(len(names))
    results = []
    for path in args.images:
        image = TF.pil_to_tensor(common.read_rgb(path))
        output = model([TF.to_dtype(image, torch.float32, scale=True).to(device)])[0]
        keep = output["scores"] >= args.score_threshold
        out = {k: v[keep].cpu() for k, v in output.items()}
        colours = [palette[int(label) - 1] for label in out["labels"]]
        drawn = image
        if len(out["boxes"]):
            drawn = draw_segmentation_masks(drawn, out["masks"][:, 0] > 0.5, alpha=0.45,
                                            colors=colours)
            captions = [f"{names[int(label) - 1]} {score:.2f}"
                        for label, score in zip(out["labels"], out["scores"], strict=True)]
            drawn = draw_bounding_boxes(drawn, out["boxes"], labels=captions, colors=colours,
                                        width=2)
        png = args.out / f"{path.stem}.png"
        common.save_png(drawn, png)
        results.append({"image": str(path), "drawing": str(png), "detections": [
            {"label": names[int(label) - 1], "category_id": meta["category_ids"][int(label) - 1],
             "score": round(float(score), 4), "box_xyxy": [round(v, 2) for v in box.tolist()]}
            for label, score, box in zip(out["labels"], out["scores"], out["boxes"], strict=True)
        ]})
        print(f"{path}: {len(out['boxes'])} objects -> {png}")
    common.write_json(args.out / "predictions.json", results)
    return 0


def _palette(n: int) -> list[tuple[int, int, int]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(n)]


def main(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.action](args)
