"""Argument groups shared by the commands: one concept, one spelling, everywhere.

The dialect: ``--model NAME`` (a variant), ``--checkpoint PATH`` (a whole trained
model) vs ``--pretrained TAG|PATH|URL|hf-hub:ORG/NAME`` (published or initial weights;
``in1k`` = the official ImageNet weights), ``--config NAME|YAML``
and ``--set KEY=VALUE`` (recipes), ``--data DIR``, ``--split`` (the split an
evaluation scores), ``--image-size``, ``--batch-size``, ``--workers``, ``--device
auto|cpu|cuda|cuda:N``, ``--threads N``, ``--amp auto|none|bf16|fp16``,
``--max-steps``, ``--out DIR`` (a folder of results) and ``--json FILE``
(machine-readable results; ``-`` for stdout). Older spellings keep working as
hidden aliases (:class:`OldSpelling`) that name the new spelling on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from fastvit.models import list_models
from fastvit.run.device import AMP_CHOICES, LEGACY_AMP_ON, default_workers

HIDDEN = argparse.SUPPRESS

logger = logging.getLogger(__name__)

#: the training commands' ``--resume`` and exit statuses (docs/training.md, "Fault tolerance")
RESUME_HELP = ("continue a checkpoint; 'auto': the newest readable one in --out (unreadable "
               "ones are skipped and named, a fresh start when there is none)")
EXIT_STATUS = ("exit status: 0 done, 2 an input error (one line; fastvit --debug adds its\n"
               "traceback), 1 a bug (traceback), 75 stopped by SIGTERM/SIGINT/SIGUSR1 after\n"
               "writing a checkpoint (run again with --resume auto), 130 aborted by a second\n"
               "Ctrl-C")


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows the default of every option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (
                action.help or ""):
            return action.help
        return super()._get_help_string(action)


class OldSpelling(argparse.Action):
    """A hidden old spelling of an option: it still works, and says on stderr which
    spelling replaced it, so scripts keep running while their authors learn the new one.

    ``new`` is the current spelling (e.g. ``"--config"``); with ``const`` the old flag
    takes no value and stores ``const`` (an old switch such as ``--no-amp``).
    :class:`CommandParser` registers it as ``action="old_spelling"``::

        group.add_argument("--recipe", dest="config", action="old_spelling", new="--config")
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 const: object = None, nargs: int | str | None = None,
                 help: str | None = HIDDEN, **kwargs: object) -> None:  # noqa: A002
        super().__init__(option_strings, dest, nargs=0 if const is not None else nargs,
                         const=const, help=help, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        logger.warning("%s: %s is an old spelling (still accepted); use %s", parser.prog,
                       option_string, self.new)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


class CommandParser(argparse.ArgumentParser):
    """The parser of a ``fastvit`` command (and, through ``add_subparsers``, of its actions):
    knows ``action="old_spelling"``, so a command module needs no import for it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "old_spelling", OldSpelling)


def _amp(value: str) -> str:
    if value not in (*AMP_CHOICES, LEGACY_AMP_ON):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(AMP_CHOICES)}")
    return value


PRETRAINED_METAVAR = "TAG|PATH|URL|hf-hub:ID"
TAGS_HELP = ("in1k, dist_in1k (distilled), in1k_reparam, dist_in1k_reparam (fused): the official "
             "ImageNet weights, fetched once into the cache; or a file, a save_pretrained "
             "folder, a URL, hf-hub:ORG/NAME")


def add_model(parser: argparse.ArgumentParser, *, checkpoint: bool = True,
              pretrained: bool = True, ema: bool = True, required: bool = False,
              model_help: str | None = None, whole_model: bool = False
              ) -> argparse._ArgumentGroup:
    """``--model``, ``--checkpoint``, ``--pretrained``, ``--ema``. ``whole_model``: the
    command uses ``--pretrained`` weights as the whole model (evaluate, predict, export),
    see :func:`weights_source`."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="NAME", choices=list_models("all"), required=required,
                       help=model_help or "FastViT variant, one of " + ", ".join(list_models("all"))
                       + (" (default: the one the checkpoint names)" if checkpoint else ""))
    if checkpoint:
        group.add_argument("--checkpoint", metavar="PATH",
                           help="a whole trained model: safetensors, .pt, .pth or .pth.tar in "
                           "our, timm's or the official layout, fused or not")
    if pretrained:
        group.add_argument("--pretrained", metavar=PRETRAINED_METAVAR,
                           help=("published weights used as the whole model: " if whole_model
                                 else "initial weights (a classifier of another size is "
                                 "replaced): ") + TAGS_HELP)
    if ema:
        group.add_argument("--ema", action="store_true",
                           help="take the EMA weights of a training checkpoint")
    return group


CLIP_PRETRAINED_HELP = ("open_clip's published weights of the model: dfndr2b (MobileCLIP2), "
                        "datacompdr (MobileCLIP), or our tags of the same releases "
                        "(apple_mclip2_dfndr2b, apple_mclip); fetched once into the Hugging "
                        "Face cache (HF_HUB_OFFLINE=1: the cache only); or hf-hub:ORG/NAME, a "
                        "URL")


def add_image_inputs(parser: argparse.ArgumentParser, *, required: bool = True,
                     unreadable: str = "skipped with a note") -> None:
    """The positional ``IMAGE|DIR|GLOB...`` of the commands that read images
    (expanded by :mod:`fastvit.tasks.inputs`)."""
    parser.add_argument("images", nargs="+" if required else "*", metavar="IMAGE|DIR|GLOB",
                        help="image files, folders (searched recursively) or quoted glob "
                        f"patterns ('photos/**/*.jpg'); unreadable files found in a folder are "
                        f"{unreadable}, a named one is an error")


def add_clip_model(parser: argparse.ArgumentParser, *, model_required: bool = True,
                   model_help: str | None = None) -> argparse._ArgumentGroup:
    """``--model`` (open_clip's name of a MobileCLIP model), ``--checkpoint``,
    ``--pretrained`` of the CLIP commands (zeroshot, embed, search)."""
    from fastvit.clip.models import CLIP_MODELS

    group = parser.add_argument_group("model")
    towers = ", ".join(f"{name} ({spec.tower})" for name, spec in CLIP_MODELS.items())
    group.add_argument("--model", metavar="NAME", choices=list(CLIP_MODELS),
                       required=model_required,
                       help=model_help or f"the CLIP model, as open_clip names it: {towers}")
    group.add_argument("--checkpoint", metavar="FILE",
                       help="an open_clip whole-model file (visual.trunk.*, text.*, "
                       "logit_scale): safetensors, .bin or .pt")
    group.add_argument("--pretrained", metavar="TAG|hf-hub:ID", help=CLIP_PRETRAINED_HELP)
    return group


def weights_source(args: argparse.Namespace) -> str | None:
    """The whole model's weights: ``--checkpoint`` or ``--pretrained`` (not both)."""
    checkpoint, pretrained = getattr(args, "checkpoint", None), getattr(args, "pretrained", None)
    if checkpoint and pretrained:
        from fastvit.errors import ConfigError

        raise ConfigError("give --checkpoint PATH or --pretrained TAG|PATH|URL|hf-hub:ID, "
                          "not both")
    return checkpoint or pretrained


def add_compute(parser: argparse.ArgumentParser, *, amp: bool = True,
                device: bool = True, device_default: str = "auto") -> argparse._ArgumentGroup:
    group = parser.add_argument_group("compute")
    if device:
        group.add_argument("--device", default=device_default, metavar="DEVICE",
                           help="auto, cpu, cuda or cuda:N (auto: CUDA when available)")
    group.add_argument("--threads", type=int, metavar="N",
                       help="intra-op CPU threads (default: PyTorch's); on a shared machine "
                       "--threads 1 avoids OpenMP thrashing")
    if amp:
        group.add_argument("--amp", type=_amp, metavar="{" + ",".join(AMP_CHOICES) + "}",
                           nargs="?", const=LEGACY_AMP_ON, default=None,
                           help="mixed precision (auto: bf16 on CUDA, none on CPU)")
        group.add_argument("--no-amp", dest="amp", action="old_spelling", const="none",
                           new="--amp none")
    return group


def add_data(parser: argparse.ArgumentParser, *, split: str | None = "val",
             batch_size: int | None = None, workers: bool = True,
             data_help: str = "dataset root") -> argparse._ArgumentGroup:
    group = parser.add_argument_group("data")
    group.add_argument("--data", metavar="DIR", help=data_help)
    if split is not None:
        group.add_argument("--split", default=split, help="the split to evaluate")
    group.add_argument("--batch-size", type=int, default=batch_size, metavar="N",
                       help="images per batch (per process)")
    if workers:
        group.add_argument("--workers", type=int, default=None, metavar="N",
                           help=f"DataLoader worker processes (default: up to the machine's "
                           f"cores, {default_workers()} here)")
    return group


def add_recipe(parser: argparse.ArgumentParser, default_help: str) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("recipe")
    group.add_argument("--config", metavar="NAME|YAML", help=default_help)
    group.add_argument("--recipe", dest="config", action="old_spelling", new="--config")
    group.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE",
                       help="override any recipe key, e.g. --set optim.lr=5e-4 (repeatable)")
    return group


def add_outputs(parser: argparse.ArgumentParser, *, out: str | None = None,
                out_required: bool = False, json: bool = True) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("output")
    if out is not None:
        group.add_argument("--out", metavar="DIR", required=out_required, help=out)
    if json:
        group.add_argument("--json", metavar="FILE", nargs="?", const="-",
                           help="also write the results as JSON to FILE (- or no value: "
                           "stdout)")
    return group


def emit_json(target: str | None, obj: object) -> None:
    """Write ``obj`` as JSON to ``target`` (a file, atomically; ``-``: stdout)."""
    if target is None:
        return
    from fastvit.files import json_text, write_json

    if target == "-":
        print(json_text(obj), end="")
        return
    with writing("--json", target):
        write_json(target, obj)
    print(f"wrote {target}", file=sys.stderr)


@contextlib.contextmanager
def writing(option: str, path: str | os.PathLike) -> Iterator[None]:
    """Writing the file an option names: a folder that cannot be created or written is that
    option's error (one line naming both), not a traceback."""
    try:
        yield
    except OSError as err:
        from fastvit.errors import ConfigError

        where = f": {err.filename}" if err.filename and str(err.filename) != str(path) else ""
        raise ConfigError(f"{option} {path}: cannot write it: {err.strerror or err}{where}"
                          ) from None
