"""``fastvit train``: train or fine-tune a FastViT classifier from a recipe.

Examples::

    fastvit train --data /data/imagenet --model fastvit_sa12 --out runs/sa12
    torchrun --nproc-per-node 8 -m fastvit train --config fastvit_sa12 --data /data/imagenet
    fastvit train --config fastvit_ma36_ft384 --data /data/imagenet --checkpoint ma36.safetensors
    fastvit train --data digits --out runs/digits      # bundled data, about a minute on a CPU
    fastvit train ... --set optim.lr=5e-4 --set data.mixup=0   # any recipe key
    fastvit train ... --resume auto                            # continue the newest checkpoint

The recipe is ``--config`` (a packaged name or a YAML path); without it, the
packaged recipe of ``--model`` (``digits_t8`` for ``--data digits``). Plain
flags and then ``--set`` overrides are applied on top (``--print-config``
shows the result).
"""

from __future__ import annotations

import argparse
import json
import os

from fastvit.train.config import (
    AMP_CHOICES,
    apply_overrides,
    dump_yaml,
    list_recipes,
    load_recipe,
    set_value,
)

# flag attribute -> recipe key (plain flags are shortcuts for --set)
FLAG_KEYS = {
    "data": "data.path", "model": "model.variant", "out": "run.out_dir",
    "epochs": "schedule.epochs", "batch_size": "data.batch_size",
    "global_batch": "optim.global_batch", "lr": "optim.lr", "workers": "data.workers",
    "image_size": "data.image_size", "amp": "run.amp", "device": "run.device",
    "checkpoint": "model.checkpoint", "num_classes": "model.num_classes",
    "distill": "distill.kind", "teacher": "distill.teacher",
    "teacher_weights": "distill.teacher_weights", "clip_grad": "optim.clip_grad",
    "drop_path": "model.drop_path", "seed": "run.seed", "bad_images": "data.bad_images",
    "save_every": "run.save_every_steps", "threads": "run.threads",
    "stop_at_step": "run.stop_at_step",
}
SWITCH_KEYS = {"channels_last": "run.channels_last", "reset_classifier": "model.reset_classifier",
               "deterministic": "run.deterministic", "no_progress": "run.progress"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (__doc__.split("::", 1)[1].strip("\n") + "\n\npackaged recipes: "
                     + ", ".join(list_recipes()))
    g = parser.add_argument_group("recipe")
    g.add_argument("--config", metavar="NAME|YAML",
                   help="packaged recipe name or YAML file (default: the --model recipe)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key, e.g. --set optim.lr=5e-4 (repeatable)")
    g.add_argument("--print-config", action="store_true",
                   help="print the effective recipe as YAML and exit")
    g = parser.add_argument_group("data and model")
    g.add_argument("--data", metavar="DIR|digits",
                   help="ImageFolder root (train/ and val/ or validation/) or 'digits'")
    g.add_argument("--model", metavar="VARIANT", help="FastViT variant, e.g. fastvit_sa12")
    g.add_argument("--num-classes", type=int, help="check the data has this many classes")
    g.add_argument("--image-size", type=int)
    g.add_argument("--bad-images", choices=("skip", "error"),
                   help="unreadable images: skip with a warning (default) or stop")
    g.add_argument("--checkpoint", metavar="PATH",
                   help="initial weights for fine-tuning (any layout fastvit loads)")
    g.add_argument("--reset-classifier", action="store_true",
                   help="load --checkpoint with its own head, then make a new classifier")
    g.add_argument("--drop-path", type=float)
    g = parser.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, help="epochs of warmup + cosine (cooldown extra)")
    g.add_argument("--batch-size", type=int, help="images per process and micro-batch")
    g.add_argument("--global-batch", type=int,
                   help="images per optimizer step (gradient accumulation fills the gap)")
    g.add_argument("--lr", type=float, help="learning rate at optim.lr_base_batch images")
    g.add_argument("--clip-grad", type=float, metavar="NORM")
    g.add_argument("--distill", choices=("none", "hard", "soft"))
    g.add_argument("--teacher", metavar="NAME",
                   help="torchvision classifier (e.g. regnet_y_16gf) or FastViT variant")
    g.add_argument("--teacher-weights", metavar="PATH", help="local weights of the teacher")
    g = parser.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="output folder (checkpoints, metrics, curves)")
    g.add_argument("--resume", metavar="PATH|auto",
                   help="continue a checkpoint ('auto': the newest in --out, if any)")
    g.add_argument("--workers", type=int, help="DataLoader worker processes")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--amp", choices=AMP_CHOICES, help="mixed precision (fp16 needs CUDA)")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms (slower on GPU)")
    g.add_argument("--seed", type=int)
    g.add_argument("--threads", type=int, help="torch intra-op CPU threads")
    g.add_argument("--save-every", type=int, metavar="STEPS",
                   help="checkpoint every N optimizer steps (0: epoch ends only)")
    g.add_argument("--stop-at-step", type=int, metavar="STEP",
                   help="end this invocation after STEP (checkpointed; resumable)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """Recipe file, then plain flags, then ``--set`` overrides."""
    name = args.config
    if name is None:
        name = "digits_t8" if args.data == "digits" else (args.model or "fastvit_t8")
    cfg = load_recipe(name)
    for attr, key in FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            set_value(cfg, key, value, source=f"--{attr.replace('_', '-')}")
    for attr, key in SWITCH_KEYS.items():
        if getattr(args, attr, False):
            set_value(cfg, key, attr != "no_progress", source=f"--{attr.replace('_', '-')}")
    return apply_overrides(cfg, args.overrides)


def main(args: argparse.Namespace) -> int:
    from fastvit.train.config import validate

    cfg = config_from_args(args)
    if args.print_config:
        validate(cfg)
        print(dump_yaml(cfg), end="")
        return 0
    from fastvit.train.trainer import fit

    summary = fit(cfg, resume=args.resume)
    if summary.get("last_eval") and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"epoch": summary["epoch"], "step": summary["step"],
                          "best_top1": summary["best_top1"], **summary["last_eval"]}))
    return 0
