"""``fastvit bench``: latency / throughput of FastViT and its peers, per runtime.

Results go to ``--out``: ``bench.json`` (updated after every measurement, so a
killed run keeps what it measured), ``bench.md`` and ``pareto.png`` (measured
latency against published ImageNet top-1), each with the command that
reproduces them.

Examples::

    fastvit bench fastvit_t8 fastvit_sa12 --runtimes eager onnx onnx-int8 --threads 2
    fastvit bench fastvit_t8 --runtimes onnx executorch executorch-int8 --threads 2
    fastvit bench fastvit peers --repeats 3 --out outputs/bench
    fastvit bench fastvit_t8 --runtimes onnx openvino openvino-bf16 openvino-int8 --threads 2
    fastvit bench fastvit_t8 --pick --pretrained in1k --images val/ --threads 2

``--pick`` times every installed runtime and precision of one model here, checks each
against eager fp32 and writes ``pick.json``: the fastest fp32-exact one and the fastest
within 1 point of top-1 (see :mod:`fastvit.bench.pick`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from fastvit.bench.pick import PICK_RUNTIMES, pick_runtime, pick_table, write_pick
from fastvit.bench.report import markdown_table, write_reports
from fastvit.bench.run import BenchConfig, run_benchmark
from fastvit.bench.runtimes import RUNTIMES
from fastvit.cli.arguments import PRETRAINED_METAVAR, add_compute
from fastvit.errors import ConfigError
from fastvit.files import write_json
from fastvit.run.device import resolve_device
from fastvit.weights.registry import TAGS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", default=["all"], metavar="MODEL",
                        help="FastViT variants, peers (torchvision names; timm:NAME) or groups "
                        "fastvit / peers / all")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=None,
                        metavar="RUNTIME", help=f"any of {', '.join(RUNTIMES)} (default: eager; "
                        f"with --pick every one but compile)")
    parser.add_argument("--unfused", action="store_true",
                        help="benchmark train-time (unfused) forms instead of fused ones")
    parser.add_argument("--features-only", action="store_true",
                        help="backbones without head (detection/segmentation latency)")
    parser.add_argument("--image-size", type=int, default=256, help="FastViT input side")
    parser.add_argument("--peer-image-size", type=int, metavar="N",
                        help="peer input side (default: each peer's published eval size)")
    parser.add_argument("--batch-size", type=int, default=1, help="latency batch")
    parser.add_argument("--throughput-batch", type=int, default=16,
                        help="throughput batch (0: skip throughput)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs (median, p90)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    parser.add_argument("--repeats", type=int, default=1,
                        help="passes over the whole list; each result is the median over "
                        "passes (robust to bursts of load on shared machines)")
    parser.add_argument("--half", action="store_true", help="fp16 (CUDA, PyTorch runtimes)")
    parser.add_argument("--pretrained", metavar=PRETRAINED_METAVAR,
                        help="weights of the FastViT variants (default: random; latency does "
                        "not depend on them, int8 calibration does): a tag for every variant "
                        "(" + ", ".join(TAGS) + ") or, with one variant, a file, URL or "
                        "hf-hub:ORG/NAME")
    add_compute(parser, amp=False, device_default="cpu")
    parser.add_argument("--spin", action="store_true", default=None,
                        help="let ONNX Runtime / OpenVINO threads spin and pin them (a "
                        "dedicated host; default: off unless FASTVIT_SPIN=1)")
    pick = parser.add_argument_group("--pick: which runtime to deploy here")
    pick.add_argument("--pick", action="store_true",
                      help="time every installed runtime/precision of one FastViT variant, "
                      "check each against eager fp32, write pick.json with the fastest "
                      "fp32-exact one and the fastest within 1 point of top-1")
    pick.add_argument("--images", metavar="DIR",
                      help="ImageFolder of real images for --pick (half calibrate int8, half "
                      "are scored; default: random inputs)")
    pick.add_argument("--pick-images", type=int, default=32, metavar="N",
                      help="images --pick uses from --images")
    parser.add_argument("--out", default="outputs/bench", metavar="DIR",
                        help="folder for bench.json, bench.md, pareto.png")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    names = {f.name for f in dataclasses.fields(BenchConfig)}
    config = BenchConfig(**{k: v for k, v in vars(args).items()
                            if k in names and v is not None})
    if args.runtimes is None:
        config.runtimes = list(PICK_RUNTIMES) if args.pick else ["eager"]
    config.device = str(resolve_device(args.device))
    config.threads = args.threads or torch.get_num_threads()
    return config


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    config.validate()
    torch.set_num_threads(config.threads)
    if (args.images or args.pick_images != 32) and not args.pick:
        raise ConfigError("--images and --pick-images are for --pick")
    if args.pick:
        return run_pick(config, args)
    out = Path(config.out)
    report = run_benchmark(config, on_row=lambda so_far: write_json(out / "bench.json", so_far))
    paths = write_reports(report, out)
    print(markdown_table(report["results"]))
    print(f"\nreproduce: {report['command']}")
    print("wrote " + ", ".join(str(p) for p in paths))
    failed = [r for r in report["results"] if r["status"] == "failed"]
    for row in failed:
        print(f"failed: {row['model']} / {row['runtime']}: {row['note']}")
    return 1 if failed else 0


def run_pick(config: BenchConfig, args: argparse.Namespace) -> int:
    report = pick_runtime(config, images=args.images, count=args.pick_images)
    path = write_pick(report, Path(config.out))
    print(pick_table(report))
    print(f"\nreproduce: {report['command']}")
    print(f"wrote {path}")
    return 0 if report["pick"]["fp32_exact"] else 1
