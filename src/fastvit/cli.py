"""The ``fastvit`` command line.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``; only the chosen one is imported, so ``fastvit info``
does not pay for ONNX or the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fastvit.errors import FastVitError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fastvit.demo", "train on bundled data, verify reparameterization, write a report"),
    "info": ("fastvit.info", "print the variant table (params, GMACs, depths, widths, mixers)"),
    "convert": ("fastvit.convert", "convert any supported checkpoint layout to safetensors"),
    "train": ("fastvit.train.cli", "train or fine-tune a classifier (torchrun for DDP)"),
    "validate": ("fastvit.evaluate", "top-1/top-5 and robustness evaluation"),
    "export": ("fastvit.export", "export a fused model to ONNX / Core ML / TorchScript"),
    "predict": ("fastvit.predict", "classify images"),
    "bench": ("fastvit.bench", "latency / throughput benchmark against peers"),
    "detect": ("fastvit.tasks.detection.cli", "COCO detection / instance segmentation"),
    "segment": ("fastvit.tasks.segmentation.cli", "ADE20K semantic segmentation"),
    "hand": ("fastvit.tasks.hand.cli", "FreiHAND 3D hand mesh regression"),
}


def _usage() -> str:
    lines = ["usage: fastvit COMMAND [options]   (fastvit COMMAND --help for details)", "",
             "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from fastvit import __version__

        print(f"fastvit {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"fastvit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"fastvit {name}", description=text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except (FastVitError, ValueError) as err:
        print(f"fastvit {name}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"fastvit {name}: error: {err.strerror or err}: {err.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastvit {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
