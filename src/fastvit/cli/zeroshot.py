"""``fastvit zeroshot``: classify images into any labels with a MobileCLIP model, no training.

Each label becomes a prompt (``--template``, ``"a photo of a {}."`` by default); every
image gets the probability of each label, computed as open_clip computes zero-shot
(normalized features, ``exp(logit_scale)`` x cosine, softmax over the labels).
``--data DIR`` scores an ImageFolder instead, its class folder names being the labels:
top-1/top-5 and per-class accuracy, as ``fastvit evaluate`` reports them.

Examples::

    fastvit zeroshot photos/ --model MobileCLIP2-S0 --pretrained dfndr2b --labels cat,dog,car
    fastvit zeroshot pet.jpg --model MobileCLIP2-S3 --checkpoint s3.safetensors \\
        --labels "tabby cat,golden retriever" --template "a blurry photo of a {}." --json out.json
    fastvit zeroshot --data my_pets/ --model MobileCLIP2-S0 --pretrained dfndr2b --json pets.json
"""

from __future__ import annotations

import argparse

from fastvit.cli.arguments import (
    add_clip_model,
    add_compute,
    add_image_inputs,
    add_outputs,
    emit_json,
)
from fastvit.clip.zeroshot import DEFAULT_TEMPLATE, check_template, parse_labels
from fastvit.errors import ConfigError
from fastvit.run.device import cpu_threads, default_workers, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_inputs(parser, required=False)
    add_clip_model(parser)
    group = parser.add_argument_group("labels")
    group.add_argument("--labels", metavar="A,B,C",
                       help="the class names, comma-separated (one prompt each)")
    group.add_argument("--template", default=DEFAULT_TEMPLATE,
                       help="the prompt of a label; {} stands for the label")
    group.add_argument("--data", metavar="DIR",
                       help="score an ImageFolder instead (DIR/val/<class>/..., else "
                       "DIR/train/<class>/... or DIR/<class>/...): the folder names are the "
                       "labels ('_' read as a space in the prompts)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="images decoded and classified at a time")
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"--data: DataLoader worker processes (default: "
                        f"{default_workers()} here)")
    parser.add_argument("--bad-images", choices=["skip", "error"], default="skip",
                        help="--data: unreadable images are skipped and counted, or stop")
    add_compute(parser, amp=False)
    add_outputs(parser)


def main(args: argparse.Namespace) -> int:
    from fastvit.clip import ZeroShotClassifier, classify, evaluate_folder, load_clip

    template = check_template(args.template)
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.data and (args.images or args.labels):
        raise ConfigError("--data DIR scores a labelled folder, its folder names being the "
                          "labels: drop the images and --labels (or drop --data)")
    if not args.data:
        labels = parse_labels(args.labels or "")
        if not args.images:
            raise ConfigError("give images (files, folders, glob patterns) or --data DIR")
        from fastvit.tasks.inputs import found_images

        files, found = found_images(args.images, "classify")  # before any model
    with cpu_threads(args.threads):
        device = resolve_device(args.device)
        clip = load_clip(args.model, args.checkpoint, args.pretrained)
        if args.data:
            from fastvit.evaluate import format_table

            workers = default_workers() if args.workers is None else args.workers
            results = evaluate_folder(clip, args.data, template, batch_size=args.batch_size,
                                      workers=workers, device=device,
                                      bad_images=args.bad_images)
            if args.json != "-":
                print(format_table(results))
            emit_json(args.json, results)
            return 0
        classifier = ZeroShotClassifier(clip, labels, template)
        rows = classify(files, classifier, batch_size=args.batch_size, skippable=found,
                        device=device)
    if args.json != "-":
        from fastvit.deploy.predict import format_results

        print(format_results(rows))
    emit_json(args.json, {"model": clip.name, "checkpoint": clip.source, "template": template,
                          "labels": labels, "images": rows})
    return 0
