"""Options shared by the three dense-task commands (``detect``, ``segment``, ``hand``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from fastvit.cli.arguments import (
    EXIT_STATUS,
    HIDDEN,
    PRETRAINED_METAVAR,
    RESUME_HELP,
    TAGS_HELP,
    add_compute,
    add_recipe,
)
from fastvit.models import list_models
from fastvit.run.recipes import list_recipes

#: The recipe keys of the flags every task's ``train`` has (``add_train_options`` and
#: ``--amp``): the same dotted keys as ``fastvit train``'s (``cli/train.py: FLAG_KEYS``).
TASK_FLAG_KEYS = {"model": "model.variant", "pretrained": "model.pretrained",
                  "drop_path": "model.drop_path", "batch_size": "data.batch_size",
                  "workers": "data.workers", "lr": "optim.lr", "clip_grad": "optim.clip_grad",
                  "seed": "run.seed", "amp": "run.amp"}


def add_train_options(p: argparse.ArgumentParser, *, length: str = "epochs") -> None:
    """Recipe, backbone, run folder, resume, early stop, compute -- the same everywhere."""
    add_recipe(p, "recipe: a packaged name or a YAML file (packaged: "
               + ", ".join(list_recipes("tasks")) + ")")
    g = p.add_argument_group("model and schedule (shortcuts for recipe keys)")
    g.add_argument("--model", metavar="NAME", choices=list_models(),
                   help="FastViT variant of the backbone")
    g.add_argument("--pretrained", metavar=PRETRAINED_METAVAR,
                   help="ImageNet weights of the backbone: " + TAGS_HELP)
    if length == "epochs":
        g.add_argument("--epochs", type=int)
    else:
        g.add_argument("--iters", type=int, help="optimizer steps")
    g.add_argument("--drop-path", type=float, help="stochastic depth of the backbone")
    g.add_argument("--batch-size", type=int, help="per process")
    g.add_argument("--lr", type=float)
    g.add_argument("--clip-grad", type=float, metavar="NORM", help="max global grad norm")
    g.add_argument("--workers", type=int, help="DataLoader worker processes")
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="run folder (checkpoints, metrics, plots)")
    g.add_argument("--resume", metavar="PATH|auto", help=RESUME_HELP)
    g.add_argument("--max-steps", type=int, metavar="STEP",
                   help="end this invocation after STEP (checkpointed; resumable)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model of the training step (see docs/training.md)")
    add_compute(p, device_default=None)
    p.epilog = EXIT_STATUS


def recipe_values(args: argparse.Namespace, keys: dict[str, str]) -> dict[str, object]:
    """Recipe keys set by plain flags: ``{recipe key: value}`` (None: not given)."""
    return {key: getattr(args, attr, None) for attr, key in keys.items()}


def add_eval_options(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a checkpoint of this command's train, or its run folder (best.pt)")
    p.add_argument("--split", default=split, help="the split to evaluate")
    p.add_argument("--json", metavar="FILE", nargs="?", const="-",
                   help="write every metric as JSON to FILE (- or no value: stdout)")
    add_compute(p, device_default=None)


def add_val_options(p: argparse.ArgumentParser, split: str, what: str) -> None:
    """``--val-split SPLIT`` and ``--no-val``, spelled the same by all three tasks.
    ``--val-split none`` (the old ``hand train`` spelling) still means ``--no-val``."""
    p.add_argument("--val-split", default=split, metavar="SPLIT",
                   help=f"{what} (default: {split})")
    p.add_argument("--no-val", action="store_true", help="train without evaluation")


def val_split(args: argparse.Namespace) -> str | None:
    """The split evaluated during training, or None under ``--no-val``."""
    if args.no_val:
        return None
    if args.val_split.lower() == "none":
        print("fastvit: --val-split none is spelled --no-val now", file=sys.stderr)
        return None
    return args.val_split


__all__ = ["HIDDEN", "TASK_FLAG_KEYS", "add_eval_options", "add_train_options", "add_val_options",
           "recipe_values", "val_split"]


def print_train_report(report: dict, out: str | Path, summary_line: Callable[[dict], str],
                       unit: str = "step") -> None:
    """The closing lines of ``detect train`` / ``segment train``: last evaluation, files."""
    if report["last_eval"]:
        print(f"{unit} {report['step']}: {summary_line(report['last_eval'])}")
    print(f"wrote {report['checkpoint']} and {Path(out) / 'metrics.json'}")
