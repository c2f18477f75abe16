"""``fastvit predict IMAGE...``: top-k classes of images, in PyTorch or ONNX Runtime.

Examples::

    fastvit predict cat.jpg --checkpoint runs/t8/best.safetensors
    fastvit predict cat.jpg --model fastvit_t8 --pretrained in1k   # official ImageNet weights
    fastvit predict photos/*.jpg --runtime onnx --onnx fastvit_t8_256.onnx --json preds.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from fastvit.cli.arguments import (
    add_compute,
    add_model,
    add_outputs,
    emit_json,
    weights_source,
)
from fastvit.deploy.predict import (
    RUNTIMES,
    build_predictor,
    format_results,
    predict,
    read_image,
)
from fastvit.errors import ConfigError
from fastvit.pipeline import RANDOM_WEIGHTS
from fastvit.run.device import cpu_threads, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_model(parser, whole_model=True)
    parser.add_argument("--runtime", choices=RUNTIMES, default="eager")
    parser.add_argument("--onnx", metavar="PATH",
                        help="ONNX file for --runtime onnx (default: export the model now)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="input side (default: the model's / the ONNX file's)")
    add_compute(parser, amp=False)
    add_outputs(parser)


def main(args: argparse.Namespace) -> int:
    if args.topk < 1 or args.batch_size < 1:
        raise ConfigError("--topk and --batch-size must be >= 1")
    if args.onnx and args.runtime != "onnx":
        raise ConfigError("--onnx FILE needs --runtime onnx")
    weights = weights_source(args)
    if args.runtime == "eager" and not (args.model or weights):
        raise ConfigError("give --checkpoint PATH or --model NAME --pretrained in1k (or "
                          "--model NAME alone for random weights)")
    decoded = [read_image(path) for path in args.images]  # a bad file fails before any model
    with cpu_threads(args.threads), tempfile.TemporaryDirectory(prefix="fastvit-") as scratch:
        predictor = build_predictor(args.model, weights, runtime=args.runtime,
                                    onnx_file=args.onnx, image_size=args.image_size,
                                    workdir=scratch, ema=args.ema,
                                    device=resolve_device(args.device))
        if predictor.source == RANDOM_WEIGHTS:
            print("warning: no --checkpoint or --pretrained given: random weights (meaningless "
                  "predictions)",
                  file=sys.stderr)
        results = predict(args.images, predictor, topk=args.topk, batch_size=args.batch_size,
                          decoded=decoded)
    if args.json != "-":
        print(format_results(results))
    emit_json(args.json, results)
    return 0
