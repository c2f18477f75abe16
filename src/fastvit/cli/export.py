"""``fastvit export``: the deploy form (reparameterized, BatchNorms folded) as a verified
file in one of the registered formats (:mod:`fastvit.deploy.registry`: ``--format``, its
help and the option refusals come from there), optionally int8.

Examples::

    fastvit export --checkpoint runs/t8/best.safetensors --format onnx --dynamic-batch
    fastvit export --checkpoint t8.safetensors --format onnx --int8 --calibration val/ --eval val/
    fastvit export --checkpoint sa12.pth.tar --format coreml --image-input --out exports/
    fastvit export --model fastvit_t8 --pretrained in1k --format onnx
    fastvit export --checkpoint t8.safetensors --format executorch --raw-pixels --int8 \
        --calibration val/ --eval val/ --min-agreement 0.95
    fastvit export --model fastvit_mci0 --pretrained apple_mclip2_dfndr2b --format onnx \
        --int8 --calibration images/ --min-cosine 0.99   # a MobileCLIP tower: embeddings

An embedding model (a MobileCLIP image tower without class names) is judged by the
cosine similarity of its int8 and fp32 embeddings and by nearest-neighbour agreement
instead of top-1 agreement (see :mod:`fastvit.deploy.calibration`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastvit.cli.arguments import (
    add_compute,
    add_model,
    add_outputs,
    emit_json,
    weights_source,
)
from fastvit.deploy.calibration import check_gates, int8_summary, open_folder
from fastvit.deploy.coreml import COREML_PRECISIONS
from fastvit.deploy.export import default_export_path, export_model, quantize_export
from fastvit.deploy.onnx_export import EXPORTERS, ONNX_OPSET
from fastvit.deploy.registry import FORMATS, check_export_options, formats_for, formats_help
from fastvit.errors import ConfigError
from fastvit.pipeline import RANDOM_WEIGHTS, load_model
from fastvit.run.device import cpu_threads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser, whole_model=True)
    parser.add_argument("--format", required=True, choices=list(FORMATS), help=formats_help())
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="input side (default: the checkpoint's training size, else 256)")
    parser.add_argument("--features-only", action="store_true",
                        help="the backbone without head: outputs the four stage feature maps "
                        "(detection/segmentation apps)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help=f"variable batch axis ({formats_for('dynamic_batch')})")
    parser.add_argument("--raw-pixels", action="store_true",
                        help="bake ImageNet normalization in: the input is raw 0-255 RGB "
                        f"({formats_for('raw_pixels')})")
    parser.add_argument("--image-input", action="store_true",
                        help="take an RGB image, normalization baked in "
                        f"({formats_for('image_input')})")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset")
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                        help="ONNX exporter (torchscript: the legacy one)")
    parser.add_argument("--coreml-precision", choices=COREML_PRECISIONS, default="fp16",
                        help="Core ML compute precision (fp16 runs on the Neural Engine)")
    group = parser.add_argument_group(f"int8 (static quantization: {formats_for('int8')})")
    group.add_argument("--int8", action="store_true",
                       help="also write <name>.int8<suffix> (static quantization, per-channel "
                       "int8 weights) and report fp32/int8 top-1 agreement (a MobileCLIP "
                       "tower: embedding cosine similarity and nearest-neighbour agreement)")
    group.add_argument("--calibration", metavar="DIR",
                       help="ImageFolder (DIR/<class>/<image>) of calibration images, or "
                       "the val split of WebDataset shards / a datasets folder")
    group.add_argument("--calibration-size", type=int, default=128, metavar="N",
                       help="calibration images (spread over the classes)")
    group.add_argument("--eval", metavar="DIR",
                       help="labelled ImageFolder: fp32 and int8 top-1 (class folder i = "
                       "output index i, e.g. sorted ImageNet wnids)")
    group.add_argument("--min-agreement", type=float, metavar="F",
                       help="fail when fp32/int8 top-1 agreement (an embedding model: "
                       "nearest-neighbour agreement) is below F (0..1)")
    group.add_argument("--min-cosine", type=float, metavar="F",
                       help="embedding models: fail when the mean cosine similarity of int8 "
                       "and fp32 embeddings is below F")
    add_compute(parser, amp=False, device=False)
    out = add_outputs(parser, out="folder for the exported file (named <model>_<size><suffix>; "
                      "default: the working directory)")
    out.add_argument("--output", metavar="FILE", help="exact path of the exported file")


def _check(args: argparse.Namespace) -> None:
    check_export_options(args.format, image_size=args.image_size, int8=args.int8,
                         dynamic_batch=args.dynamic_batch, raw_pixels=args.raw_pixels,
                         image_input=args.image_input, features_only=args.features_only)
    if args.int8 and not args.calibration:
        raise ConfigError("--int8 needs --calibration DIR (an ImageFolder of images)")
    if (args.calibration or args.eval or args.min_cosine is not None) and not args.int8:
        raise ConfigError("--calibration/--eval/--min-cosine are for --int8")
    if args.output and args.out:
        raise ConfigError("give --out DIR or --output FILE, not both")


def main(args: argparse.Namespace) -> int:
    _check(args)
    if args.int8:  # an empty or missing folder fails before any file is written
        open_folder(args.calibration, None, "calibration")
    with cpu_threads(args.threads):
        loaded = load_model(args.model, weights_source(args), ema=args.ema,
                            features_only=args.features_only)
        check_gates(loaded, args.min_cosine if args.int8 else None)
        if loaded.source == RANDOM_WEIGHTS:
            print(f"warning: no --checkpoint or --pretrained given: {loaded.variant} has "
                  f"random weights (fine for latency, meaningless predictions)")
        size = args.image_size or loaded.image_size
        path = (Path(args.output) if args.output else
                default_export_path(loaded.variant, size, args.format, args.out or "."))
        result = export_model(loaded, args.format, path, image_size=size,
                              dynamic_batch=args.dynamic_batch, raw_pixels=args.raw_pixels,
                              image_input=args.image_input, opset=args.opset,
                              exporter=args.exporter, coreml_precision=args.coreml_precision)
        print(result.summary())
        report = {"export": result.as_dict()}
        if args.int8:
            report["int8"] = quantize_export(result, args.calibration,
                                             calibration_size=args.calibration_size,
                                             eval_dir=args.eval, min_agreement=args.min_agreement,
                                             min_cosine=args.min_cosine)
            print(int8_summary(report["int8"]))
    emit_json(args.json, report)
    return 0
