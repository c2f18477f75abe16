"""``fastvit train``: train or fine-tune a FastViT classifier from a recipe.

Examples::

    fastvit train --data /data/imagenet --model fastvit_sa12 --out runs/sa12
    torchrun --nproc-per-node 8 -m fastvit train --config fastvit_sa12 --data /data/imagenet
    fastvit train --config fastvit_ma36_ft384 --data /data/imagenet --pretrained ma36.safetensors
    fastvit train --data my_images --model fastvit_t8 --epochs 6 --image-size 64 \
        --batch-size 64 --out runs/mine                # your own folder: recipe 'small'
    fastvit train --config finetune --data my_images --model fastvit_sa12 \
        --pretrained in1k --out runs/ft                # fine-tune the ImageNet weights
    fastvit train --data my_images --model fastvit_mci0 --pretrained apple_mclip2_dfndr2b \
        --out runs/mci0                                # a MobileCLIP tower as a classifier
    fastvit train --config linear_probe --data my_images --model fastvit_mci0 \
        --pretrained apple_mclip2_dfndr2b              # frozen tower, new classifier only
    fastvit train --data digits --out runs/digits      # bundled data, about a minute on a CPU
    fastvit train ... --set optim.lr=5e-4 --set data.mixup=0   # any recipe key
    fastvit train ... --resume auto                            # continue the newest checkpoint

The recipe is ``--config`` (a packaged name or a YAML path); without it, the
paper's ImageNet recipe of ``--model``, except for a folder of fewer than
100,000 training images: ``small`` (from scratch) or ``finetune`` (with
``--pretrained``), and ``digits_t8`` for ``--data digits``. Plain flags mean
what they say (``--epochs`` in total, ``--batch-size`` without accumulation,
``--lr`` absolute) and then ``--set`` overrides are applied on top
(``--print-config`` shows the result). The run's first lines state the
effective schedule, batch, lr and augmentation.
"""

from __future__ import annotations

import argparse
import json
import os

from fastvit.cli.arguments import (
    EXIT_STATUS,
    PRETRAINED_METAVAR,
    RESUME_HELP,
    TAGS_HELP,
    add_compute,
    add_recipe,
    default_workers,
)
from fastvit.models import list_models
from fastvit.run.recipes import dump_yaml, list_recipes
from fastvit.train.config import build_config, validate
from fastvit.train.freeze import FREEZE_CHOICES

# flag attribute -> recipe key (plain flags are shortcuts for --set)
FLAG_KEYS = {
    "data": "data.path", "model": "model.variant", "out": "run.out_dir",
    "epochs": "schedule.epochs", "warmup_epochs": "schedule.warmup_epochs",
    "cooldown_epochs": "schedule.cooldown_epochs", "batch_size": "data.batch_size",
    "global_batch": "optim.global_batch", "accum_steps": "optim.accum_steps",
    "lr": "optim.lr", "lr_base": "optim.lr_base", "workers": "data.workers",
    "val_fraction": "data.val_fraction",
    "image_size": "data.image_size", "amp": "run.amp", "device": "run.device",
    "pretrained": "model.pretrained", "num_classes": "model.num_classes",
    "distill": "distill.kind", "teacher": "distill.teacher",
    "teacher_weights": "distill.teacher_weights", "clip_grad": "optim.clip_grad",
    "drop_path": "model.drop_path", "freeze": "model.freeze", "seed": "run.seed",
    "bad_images": "data.bad_images",
    "save_every": "run.save_every_steps", "threads": "run.threads",
    "max_steps": "run.max_steps",
}
SWITCHES = {"channels_last": ("run.channels_last", True),
            "reset_classifier": ("model.reset_classifier", True),
            "deterministic": ("run.deterministic", True), "no_progress": ("run.progress", False),
            "ema": ("model.pretrained_ema", True)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "packaged recipes: " + ", ".join(list_recipes()) + "\n\n" + EXIT_STATUS
    g = add_recipe(parser, "packaged recipe name or YAML file (default: the --model paper "
                   "recipe, or small / finetune for a folder under 100,000 images)")
    g.add_argument("--print-config", action="store_true",
                   help="print the effective recipe as YAML and exit")
    g = parser.add_argument_group("data and model")
    g.add_argument("--data", metavar="DIR|digits",
                   help="ImageFolder root: DIR/train/<class>/<images> and DIR/val/... (without "
                   "val/, --val-fraction of train/ is held out); WebDataset shards (a folder "
                   "of train-*.tar + val-*.tar, or a brace pattern); a datasets save_to_disk "
                   "folder or Parquet files; hf:ORG/NAME; or 'digits'")
    g.add_argument("--val-fraction", type=float, metavar="F",
                   help="share of each class of train/ held out when DIR has no val/ folder "
                   "(seeded, stratified; recipe default 0.1)")
    g.add_argument("--model", metavar="NAME", choices=list_models("all"),
                   help="FastViT variant, e.g. fastvit_sa12, or a MobileCLIP tower "
                   "(fastvit_mci0..4, with --pretrained: fine-tuned as a classifier)")
    g.add_argument("--num-classes", type=int, help="check the data has this many classes")
    g.add_argument("--image-size", type=int)
    g.add_argument("--bad-images", choices=("skip", "error"),
                   help="unreadable images: skip with a warning (recipe default) or stop")
    g.add_argument("--pretrained", metavar=PRETRAINED_METAVAR,
                   help="initial weights for fine-tuning: " + TAGS_HELP)
    g.add_argument("--checkpoint", dest="pretrained", action="old_spelling", new="--pretrained")
    g.add_argument("--ema", action="store_true",
                   help="take the EMA weights of a training checkpoint given as --pretrained")
    g.add_argument("--reset-classifier", action="store_true",
                   help="load --pretrained with its own head, then make a new classifier")
    g.add_argument("--drop-path", type=float)
    g.add_argument("--freeze", choices=("none", *FREEZE_CHOICES),
                   help="backbone: train only the new classifier (head.fc), BatchNorm in eval "
                   "mode, no drop path (a linear probe; see --config linear_probe)")
    g = parser.add_argument_group("optimization")
    g.add_argument("--epochs", type=int,
                   help="epochs in total (warmup and cooldown included)")
    g.add_argument("--warmup-epochs", type=float, metavar="N",
                   help="linear warmup (shortened with a note if warmup + cooldown exceed "
                   "half the run)")
    g.add_argument("--cooldown-epochs", type=float, metavar="N",
                   help="last epochs at the minimum lr (inside --epochs)")
    g.add_argument("--batch-size", type=int,
                   help="images per process and step; alone it means no gradient "
                   "accumulation (global batch = batch x processes)")
    g.add_argument("--global-batch", type=int,
                   help="images per optimizer step, reached by gradient accumulation")
    g.add_argument("--accum-steps", type=int, metavar="N",
                   help="micro-batches accumulated per optimizer step")
    g.add_argument("--lr", type=float,
                   help="peak learning rate, as given (replaces the recipe's lr_base)")
    g.add_argument("--lr-base", type=float,
                   help="peak learning rate at optim.lr_base_batch images per step, scaled "
                   "linearly with the global batch (the paper recipes: 1e-3 at 1024)")
    g.add_argument("--clip-grad", type=float, metavar="NORM")
    g.add_argument("--distill", choices=("none", "hard", "soft"))
    g.add_argument("--teacher", metavar="NAME",
                   help="torchvision classifier (e.g. regnet_y_16gf) or FastViT variant")
    g.add_argument("--teacher-weights", metavar="PATH|TAG",
                   help="weights of the teacher (a FastViT teacher also takes a tag, e.g. "
                   "dist_in1k)")
    g = parser.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="output folder (checkpoints, metrics, curves)")
    g.add_argument("--resume", metavar="PATH|auto", help=RESUME_HELP)
    g.add_argument("--workers", type=int,
                   help=f"DataLoader worker processes (default: the machine's cores, "
                   f"{default_workers()} here)")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step's model (Inductor; on CPU without "
                   "layout optimization, see docs/training.md)")
    g.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms (slower on GPU)")
    g.add_argument("--seed", type=int)
    g.add_argument("--save-every", type=int, metavar="STEPS",
                   help="checkpoint every N optimizer steps (0: epoch ends only)")
    g.add_argument("--max-steps", type=int, metavar="STEP",
                   help="end this invocation after STEP (checkpointed; resumable)")
    g.add_argument("--stop-at-step", dest="max_steps", type=int, action="old_spelling",
                   new="--max-steps")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--log-to", default="tensorboard", metavar="LIST",
                   help="where metrics go besides OUT/metrics.jsonl: a comma-separated list of "
                   "tensorboard, mlflow (MLFLOW_TRACKING_URI, default ./mlruns), wandb "
                   "(WANDB_MODE=offline honoured), or none (default: tensorboard)")
    add_compute(parser, device_default=None)


def config_values(args: argparse.Namespace) -> dict[str, object]:
    """The recipe keys the plain flags set (``{"data.path": ..., ...}``)."""
    values = {key: getattr(args, attr, None) for attr, key in FLAG_KEYS.items()}
    for attr, (key, value) in SWITCHES.items():
        if getattr(args, attr, False):
            values[key] = value
    return values


def main(args: argparse.Namespace) -> int:
    cfg = build_config(args.config, config_values(args), args.overrides)
    if args.print_config:
        validate(cfg)
        print(dump_yaml(cfg), end="")
        return 0
    from fastvit.run.tracking import parse_log_to
    from fastvit.train.trainer import fit

    summary = fit(cfg, resume=args.resume, compiled=args.compile,
                  log_to=parse_log_to(args.log_to))
    if summary.get("last_eval") and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"epoch": summary["epoch"], "step": summary["step"],
                          "best_top1": summary["best_top1"], **summary["last_eval"]}))
    return 0
