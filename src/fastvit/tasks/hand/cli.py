"""``fastvit hand train|evaluate|predict|convert-mano``: FreiHAND 3D hand mesh.

    fastvit hand convert-mano MANO_RIGHT.pkl mano_right.npz    # once, see below
    fastvit hand train --data FreiHAND_pub_v2 --mano mano_right.npz --out runs/hand \\
        --config configs/tasks/hand_fastvit_ma36_freihand.yaml --pretrained ma36.safetensors
    torchrun --nproc_per_node 4 -m fastvit hand train ...     # DDP
    fastvit hand evaluate --checkpoint runs/hand/checkpoint.pt --data FreiHAND_pub_v2 \\
        --mano mano_right.npz --out runs/hand/eval
    fastvit hand predict --checkpoint runs/hand/checkpoint.pt --mano mano_right.npz \\
        crops/ --out runs/hand/pred

The MANO model is licensed and distributed as a pickle; ``convert-mano`` is the
only place it is unpickled (with a restricted unpickler, on the user's word that
the file is the official download) and it writes a plain-array ``.npz`` that
every other command loads with ``allow_pickle=False``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from fastvit.tasks.common import load_recipe, parse_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser("train", help="train the hand-mesh regressor (torchrun for DDP)")
    _data_args(p, checkpoint=False)
    p.add_argument("--out", required=True, help="output folder (checkpoint, history, report)")
    p.add_argument("--config", help="recipe YAML (default: built-in values, the same as "
                   "configs/tasks/hand_fastvit_ma36_freihand.yaml)")
    p.add_argument("--model", help="FastViT variant of the backbone")
    p.add_argument("--pretrained", help="ImageNet checkpoint for the backbone (any layout)")
    p.add_argument("--input-size", type=int, help="square input side, a multiple of 32")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe option, e.g. --set aug_rotation=0 (repeatable)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--resume", help="continue from a checkpoint.pt of this command")
    p.add_argument("--eval-split", default="evaluation",
                   help="split scored every eval_every_epochs epochs and at the end "
                   "('none' to skip; skipped when its xyz/verts files are absent)")

    p = sub.add_parser("evaluate", help="PA-MPJPE / PA-MPVPE / F@5 / F@15 on a split")
    _data_args(p, checkpoint=True)
    p.add_argument("--split", default="evaluation", choices=("evaluation", "training"))
    p.add_argument("--out", help="folder for metrics.json and examples.png")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--num-examples", type=int, default=8, help="images drawn in examples.png")

    p = sub.add_parser("predict", help="meshes for images, or a FreiHAND pred.json")
    p.add_argument("inputs", nargs="*", help="image files or folders")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--mano", required=True, help="converted MANO .npz (see convert-mano)")
    p.add_argument("--freihand", help="FreiHAND root: predict its evaluation split and write "
                   "the Codalab submission file pred.json instead")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--num-examples", type=int, default=8)
    p.add_argument("--device")

    p = sub.add_parser("convert-mano", help="one-time conversion of the licensed MANO pickle "
                       "to a safe .npz (the only step that unpickles; trust the file first)")
    p.add_argument("source", help="MANO_RIGHT.pkl from mano.is.tue.mpg.de (or an .npz)")
    p.add_argument("output", help="the .npz to write")


def _data_args(p: argparse.ArgumentParser, checkpoint: bool) -> None:
    p.add_argument("--data", required=True, help="FreiHAND root (training/, evaluation/, "
                   "*_K.json, *_xyz.json, ...)")
    p.add_argument("--mano", required=True, help="converted MANO .npz (see convert-mano)")
    if checkpoint:
        p.add_argument("--checkpoint", required=True)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")


def _print(result: Any) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))


def main(args: argparse.Namespace) -> int:
    from fastvit.tasks.hand import engine

    if args.action == "convert-mano":
        from fastvit.tasks.hand.mano import convert_mano

        out = convert_mano(args.source, args.output)
        print(f"wrote {out} (plain numeric arrays; loaded with allow_pickle=False)")
        return 0
    if args.action == "train":
        from fastvit.tasks.hand.recipe import HandRecipe

        overrides = {"model": args.model, "pretrained": args.pretrained,
                     "input_size": args.input_size, "epochs": args.epochs,
                     "batch_size": args.batch_size, "lr": args.lr,
                     "weight_decay": args.weight_decay, "workers": args.workers,
                     "seed": args.seed, "amp": args.amp}
        recipe = load_recipe(HandRecipe, args.config, {**parse_sets(args.set), **overrides})
        split = None if args.eval_split == "none" else args.eval_split
        result = engine.train(recipe, data=args.data, mano_path=args.mano, out_dir=args.out,
                              device=args.device, resume=args.resume, eval_split=split,
                              max_steps=args.max_steps)
        history = result.pop("history")
        if history:
            result["first_loss"], result["last_loss"] = history[0]["loss"], history[-1]["loss"]
        _print(result)
        return 0
    if args.action == "evaluate":
        _print(engine.evaluate(args.checkpoint, args.data, args.mano, split=args.split,
                               out_dir=args.out, device=args.device,
                               batch_size=args.batch_size, workers=args.workers,
                               num_examples=args.num_examples))
        return 0
    if args.action == "predict":
        if not args.inputs and args.freihand is None:
            raise ValueError("give image files/folders or --freihand ROOT")
        _print(engine.predict(args.checkpoint, args.mano, args.inputs, out_dir=args.out,
                              freihand=args.freihand, device=args.device,
                              batch_size=args.batch_size, workers=args.workers,
                              num_examples=args.num_examples))
        return 0
    raise ValueError(f"unknown action {args.action!r}")
