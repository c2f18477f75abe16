"""``fastvit predict IMAGE|DIR|GLOB...`` or ``--data SOURCE``: top-k classes of images, in
PyTorch, ONNX Runtime or OpenVINO; over a ``--data`` source's evaluation split also each
sample's true label, and top-1 / top-5.

Examples::

    fastvit predict cat.jpg --checkpoint runs/t8/best.safetensors
    fastvit predict cat.jpg --model fastvit_t8 --pretrained in1k   # official ImageNet weights
    fastvit predict photos/ --checkpoint runs/t8/best.safetensors --csv preds.csv
    fastvit predict 'photos/**/*.jpg' --onnx fastvit_t8_256.onnx --json preds.json
    fastvit predict photos/ --openvino fastvit_t8_256.xml --precision bf16
    fastvit predict photos/ --openvino fastvit_t8_256.int8.xml --threads 2 --spin
    fastvit predict --data /data/my_shards --checkpoint runs/mine/best.safetensors --csv val.csv
    fastvit predict --data hf:ORG/NAME --onnx mine.onnx --json preds.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fastvit.cli.arguments import (
    add_compute,
    add_image_inputs,
    add_model,
    add_outputs,
    emit_json,
    weights_source,
    writing,
)
from fastvit.data.sources import FOLDER, resolve_source
from fastvit.deploy.openvino_export import PRECISIONS
from fastvit.deploy.predict import (
    RUNTIMES,
    build_predictor,
    find_images,
    format_results,
    predict,
    results_csv,
)
from fastvit.deploy.predict_sources import format_summary, predict_source
from fastvit.errors import ConfigError, DataError
from fastvit.files import atomic_write_text
from fastvit.pipeline import RANDOM_WEIGHTS
from fastvit.run.device import cpu_threads, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_inputs(parser, required=False)
    parser.add_argument("--data", metavar="SOURCE",
                        help="instead of images: the evaluation split of an ImageFolder, "
                        "WebDataset shards, a datasets folder, Parquet files or hf:ORG/NAME "
                        "(as fastvit evaluate --data), each row with its true label")
    add_model(parser, whole_model=True)
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="eager PyTorch, ONNX Runtime or OpenVINO (default: onnx with "
                        "--onnx FILE, openvino with --openvino FILE, else eager)")
    parser.add_argument("--onnx", metavar="PATH",
                        help="an exported ONNX file to run (implies --runtime onnx; without "
                        "it, --runtime onnx exports the model now)")
    parser.add_argument("--openvino", metavar="PATH",
                        help="an exported OpenVINO IR (.xml, fp32 or int8) to run (implies "
                        "--runtime openvino; without it, --runtime openvino exports now)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="OpenVINO precision hint for an fp32 IR: fp32 (exact) or bf16 "
                        "(the CPU's bf16 units: AVX512-BF16, AMX)")
    parser.add_argument("--spin", action="store_true", default=None,
                        help="let ONNX Runtime / OpenVINO threads spin between batches and "
                        "pin them (a dedicated host; default: off unless FASTVIT_SPIN=1)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16,
                        help="images decoded and classified at a time")
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="input side (default: the model's / the ONNX file's)")
    add_compute(parser, amp=False)
    group = add_outputs(parser)
    group.add_argument("--csv", metavar="FILE",
                       help="also write one row per image (top-k labels, indices, "
                       "probabilities) as CSV to FILE")


def main(args: argparse.Namespace) -> int:
    if args.topk < 1 or args.batch_size < 1:
        raise ConfigError("--topk and --batch-size must be >= 1")
    if args.images and args.data:
        raise ConfigError("give images (IMAGE|DIR|GLOB...) or --data SOURCE, not both")
    if not (args.images or args.data):
        raise ConfigError("nothing to predict: give images (IMAGE|DIR|GLOB...) or --data SOURCE")
    if args.onnx and args.openvino:
        raise ConfigError("give --onnx FILE or --openvino FILE, not both")
    if args.onnx and args.runtime not in (None, "onnx"):
        raise ConfigError(f"--onnx FILE runs on ONNX Runtime: drop --runtime {args.runtime}")
    if args.openvino and args.runtime not in (None, "openvino"):
        raise ConfigError(f"--openvino FILE runs on OpenVINO: drop --runtime {args.runtime}")
    args.runtime = args.runtime or ("onnx" if args.onnx else
                                    "openvino" if args.openvino else "eager")
    weights = weights_source(args)
    if args.runtime == "eager" and not (args.model or weights):
        raise ConfigError("give --checkpoint PATH or --model NAME --pretrained in1k (or "
                          "--model NAME alone for random weights)")
    # a missing file or data folder fails before any model
    files, found = find_images(args.images) if args.images else ([], frozenset())
    if args.data and resolve_source(args.data).kind == FOLDER and not Path(args.data).is_dir():
        raise DataError(f"--data {args.data}: no such folder (nor shards, a datasets folder, "
                        f"Parquet files or hf:ORG/NAME)")
    with cpu_threads(args.threads), tempfile.TemporaryDirectory(prefix="fastvit-") as scratch:
        predictor = build_predictor(args.model, weights, runtime=args.runtime,
                                    onnx_file=args.onnx, openvino_file=args.openvino,
                                    precision=args.precision, image_size=args.image_size,
                                    workdir=scratch, ema=args.ema,
                                    device=resolve_device(args.device),
                                    threads=args.threads, spin=args.spin)
        if predictor.source == RANDOM_WEIGHTS:
            print("warning: no --checkpoint or --pretrained given: random weights (meaningless "
                  "predictions)",
                  file=sys.stderr)
        summary = None
        if args.data:
            results, summary = predict_source(args.data, predictor, topk=args.topk,
                                              batch_size=args.batch_size)
        else:
            results = predict(files, predictor, topk=args.topk, batch_size=args.batch_size,
                              skippable=found)
    if args.json != "-":
        print(format_results(results))
    if summary is not None:
        print(format_summary(summary), file=sys.stderr if args.json == "-" else sys.stdout)
    emit_json(args.json, results)
    if args.csv:
        with writing("--csv", args.csv):
            atomic_write_text(args.csv, results_csv(results, args.topk))
        print(f"wrote {args.csv}", file=sys.stderr)
    return 0
