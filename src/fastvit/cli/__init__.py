"""The ``fastvit`` command line.

Each command lives in its own module of this package exposing
``add_arguments(parser)`` and ``main(args) -> int``, a thin face over a typed
library function; only the chosen one is imported, so ``fastvit info`` does not
pay for ONNX or the training stack. Shared option groups (one spelling per
concept) are in :mod:`fastvit.cli.arguments`.

Exit status: 0 done (also a ``--max-steps`` stop), 2 an error in the user's input
(one line on stderr: a :class:`fastvit.errors.FastVitError`; ``fastvit --debug`` or
``FASTVIT_DEBUG=1`` shows its traceback too), 1 anything else (a bug: Python's
traceback, never disguised as a user error), 75 a training run stopped by
SIGTERM/SIGINT/SIGUSR1 after writing a resumable checkpoint (continue with ``--resume
auto``), 130 aborted by a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from fastvit.errors import FastVitError, StoppedBySignal

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fastvit.cli.demo", "train on bundled data, verify every variant, write a report"),
    "info": ("fastvit.cli.info", "print the variant table (params, GMACs, depths, widths, mixers)"),
    "convert": ("fastvit.cli.convert", "convert any supported checkpoint layout to safetensors"),
    "train": ("fastvit.cli.train", "train or fine-tune a classifier (torchrun for DDP)"),
    "shards": ("fastvit.cli.shards", "write an image folder or datasets folder as WebDataset "
               "shards"),
    "evaluate": ("fastvit.cli.evaluate", "top-1/top-5 and robustness evaluation"),
    "export": ("fastvit.cli.export",
               "export the deploy form as a verified file, optionally int8 (see --format)"),
    "predict": ("fastvit.cli.predict", "classify images"),
    "zeroshot": ("fastvit.cli.zeroshot",
                 "zero-shot classification with a MobileCLIP model: any labels, no training"),
    "embed": ("fastvit.cli.embed", "write the MobileCLIP image embeddings of images to a file"),
    "search": ("fastvit.cli.search", "rank embedded images by a text or an example image"),
    "bench": ("fastvit.cli.bench", "latency / throughput benchmark against peers"),
    "detect": ("fastvit.cli.detect", "COCO detection / instance segmentation"),
    "segment": ("fastvit.cli.segment", "ADE20K semantic segmentation"),
    "hand": ("fastvit.cli.hand", "FreiHAND 3D hand mesh regression"),
    "weights": ("fastvit.cli.weights", "list, pre-fetch and verify the official weights"),
    "push": ("fastvit.cli.push", "publish a model on the Hugging Face Hub (timm-compatible)"),
    "app": ("fastvit.cli.app", "a local web page over one model: classify, zero-shot, photo "
            "search, detect, segment, hand"),
}
ALIASES = {"validate": "evaluate"}


def _usage() -> str:
    lines = ["usage: fastvit [--debug] COMMAND [options]   (fastvit COMMAND --help for details)",
             "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "aliases: " + ", ".join(f"{a} = {c}" for a, c in ALIASES.items()), "",
              "options:",
              "  --debug    show the traceback of an input error too (also: FASTVIT_DEBUG=1);",
              "             other errors always show theirs",
              "  --version  print the version"]
    return "\n".join(lines)


def build_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The parser of command ``name`` (or an alias) and the module that runs it."""
    from fastvit.cli.arguments import CommandParser, HelpFormatter

    module_name, text = COMMANDS[ALIASES.get(name, name)]
    module = importlib.import_module(module_name)
    parser = CommandParser(prog=f"fastvit {name}", description=text,
                           formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return parser, module


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: bool = False) -> None:
    """The library logs through ``logging``; the command line shows it on stderr."""
    logger = logging.getLogger("fastvit")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _debug_from_env() -> bool:
    return os.environ.get("FASTVIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    """Run ``fastvit COMMAND ...``; the exit status is in the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_from_env()
    while argv and argv[0] == "--debug":
        debug = True
        argv.pop(0)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from fastvit import __version__

        print(f"fastvit {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS and name not in ALIASES:
        print(f"fastvit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    parser, module = build_parser(name)
    configure_logging()  # before parsing: an old spelling says which one replaced it
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except StoppedBySignal as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"fastvit {name}: {stop}", file=sys.stderr)
        return stop.exit_code
    except FastVitError as err:
        if debug:
            raise
        print(f"fastvit {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastvit {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
