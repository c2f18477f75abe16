"""``fastvit hand train|evaluate|predict|convert-mano``: FreiHAND 3D hand mesh.

Examples::

    fastvit hand convert-mano MANO_RIGHT.pkl mano_right.npz    # once, see below
    fastvit hand train --data FreiHAND_pub_v2 --mano mano_right.npz --out runs/hand \\
        --pretrained ma36.safetensors
    torchrun --nproc-per-node 4 -m fastvit hand train ...     # DDP
    fastvit hand evaluate --checkpoint runs/hand --data FreiHAND_pub_v2 \\
        --mano mano_right.npz --out runs/hand/eval
    fastvit hand predict --checkpoint runs/hand --mano mano_right.npz crops/ --out preds/

The MANO model is licensed and distributed as a pickle; ``convert-mano`` is the
only place it is unpickled (with a restricted unpickler, on the user's word that
the file is the official download) and it writes a plain-array ``.npz`` that
every other command loads with ``allow_pickle=False``.
"""

from __future__ import annotations

import argparse
import os

from fastvit.cli.arguments import add_compute, emit_json
from fastvit.cli.tasks import (
    TASK_FLAG_KEYS,
    add_train_options,
    add_val_options,
    recipe_values,
    val_split,
)
from fastvit.errors import ConfigError
from fastvit.run.device import cpu_threads, resolve_device
from fastvit.run.distributed import cleanup, init_distributed

FLAG_KEYS = {**TASK_FLAG_KEYS, "epochs": "schedule.epochs", "image_size": "data.image_size",
             "weight_decay": "optim.weight_decay"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    formatter = parser.formatter_class

    p = sub.add_parser("train", help="train the hand-mesh regressor (torchrun for DDP)",
                       formatter_class=formatter)
    _data_args(p)
    add_train_options(p)
    p.add_argument("--image-size", type=int, help="square input side, a multiple of 32")
    p.add_argument("--input-size", dest="image_size", type=int, action="old_spelling",
                   new="--image-size")
    p.add_argument("--weight-decay", type=float)
    add_val_options(p, "evaluation", "split scored every run.eval_every epochs and at the "
                    "end (skipped when its xyz/verts files are absent)")
    p.add_argument("--eval-split", dest="val_split", action="old_spelling", new="--val-split")

    p = sub.add_parser("evaluate", help="PA-MPJPE / PA-MPVPE / F@5 / F@15 on a split",
                       formatter_class=formatter)
    _data_args(p)
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint of hand train, or its run folder (best.pt)")
    p.add_argument("--split", default="evaluation", choices=("evaluation", "training"))
    p.add_argument("--out", metavar="DIR", help="folder for metrics.json and examples.png")
    p.add_argument("--json", metavar="FILE", nargs="?", const="-",
                   help="write the metrics as JSON to FILE (- or no value: stdout)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--num-examples", type=int, default=8, help="images drawn in examples.png")
    add_compute(p, amp=False, device_default=None)

    p = sub.add_parser("predict", help="meshes for images, or a FreiHAND pred.json",
                       formatter_class=formatter)
    p.add_argument("inputs", nargs="*", metavar="IMAGE",
                   help="image files, folders (searched recursively) or quoted glob patterns")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint of hand train, or its run folder (best.pt)")
    p.add_argument("--mano", required=True, help="converted MANO .npz (see convert-mano)")
    p.add_argument("--freihand", help="FreiHAND root: predict its evaluation split and write "
                   "the Codalab submission file pred.json instead")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--num-examples", type=int, default=8)
    add_compute(p, amp=False, device_default=None)

    p = sub.add_parser("convert-mano", help="one-time conversion of the licensed MANO pickle "
                       "to a safe .npz (the only step that unpickles; trust the file first)")
    p.add_argument("source", help="MANO_RIGHT.pkl from mano.is.tue.mpg.de (or an .npz)")
    p.add_argument("output", help="the .npz to write")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FreiHAND root (training/, evaluation/, "
                   "*_K.json, *_xyz.json, ...)")
    p.add_argument("--mano", required=True, help="converted MANO .npz (see convert-mano)")


def _print(result: object) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        emit_json("-", result)


def _train(args: argparse.Namespace) -> int:
    from fastvit.tasks.hand import engine
    from fastvit.tasks.hand.recipe import DEFAULT_RECIPE, HandRecipe
    from fastvit.tasks.recipes import load_task_recipe

    recipe = load_task_recipe(HandRecipe, DEFAULT_RECIPE, args.config,
                              recipe_values(args, FLAG_KEYS), args.overrides)
    result = engine.train(recipe, data=args.data, mano_path=args.mano, out_dir=args.out,
                          device=args.device, resume=args.resume, eval_split=val_split(args),
                          max_steps=args.max_steps, threads=args.threads,
                          compiled=args.compile)
    summary = {k: result.get(k) for k in ("checkpoint", "step", "total_steps", "stopped",
                                         "metrics", "files")}
    if result["train"]:
        summary["first_loss"] = result["train"][0].get("loss")
        summary["last_loss"] = result["train"][-1].get("loss")
    _print(summary)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fastvit.tasks.hand import engine
    from fastvit.tasks.hand.report import write_report

    env = init_distributed(args.device)
    try:
        with cpu_threads(args.threads):
            loaded = engine.load_hand_mesh(args.checkpoint, env.device, mano_path=args.mano)
            recipe = loaded.recipe
            dataset = engine.eval_dataset(args.data, args.split, recipe)
            metrics = engine.evaluate_hand_mesh(loaded.model, dataset, env, mano=loaded.mano,
                                                batch_size=args.batch_size,
                                                workers=args.workers,
                                                root=recipe.mano.root_joint)
            examples = []
            if env.is_main and args.out is not None:
                examples = engine.example_predictions(loaded.model, dataset, mano=loaded.mano,
                                                      count=args.num_examples,
                                                      device=env.device,
                                                      root=recipe.mano.root_joint)
    finally:
        cleanup()
    if not env.is_main:
        return 0
    result = {"split": args.split, "checkpoint": str(args.checkpoint),
              "model": recipe.model.variant, "metrics": metrics}
    if args.out is not None:
        result["files"] = write_report(args.out, result, examples, loaded.mano.faces.cpu(),
                                       recipe.data.image_size)
    emit_json("-", result)
    if args.json not in (None, "-"):
        emit_json(args.json, result)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fastvit.tasks.hand.engine import load_hand_mesh
    from fastvit.tasks.hand.predict import predict_freihand_submission, predict_hand_meshes
    from fastvit.tasks.inputs import input_images

    if not args.inputs and args.freihand is None:
        raise ConfigError("give image files/folders/patterns or --freihand ROOT")
    images = input_images(args.inputs) if args.freihand is None else []  # before loading
    with cpu_threads(args.threads):
        loaded = load_hand_mesh(args.checkpoint, resolve_device(args.device),
                                mano_path=args.mano)
        if args.freihand is not None:
            records = predict_freihand_submission(loaded, args.freihand, args.out,
                                                  batch_size=args.batch_size,
                                                  workers=args.workers)
            files = {"pred": os.path.join(args.out, "pred.json")}
        else:
            records = predict_hand_meshes(loaded, images, args.out,
                                          batch_size=args.batch_size, workers=args.workers,
                                          num_examples=args.num_examples)
            files = {"predictions": os.path.join(args.out, "predictions.json")}
            if args.num_examples > 0:
                files["examples"] = os.path.join(args.out, "examples.png")
    _print({"num_images": len(records), "files": files})
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "convert-mano":
        from fastvit.tasks.hand.mano import convert_mano

        out = convert_mano(args.source, args.output)
        print(f"wrote {out} (plain numeric arrays; loaded with allow_pickle=False)")
        return 0
    return {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.action](args)
