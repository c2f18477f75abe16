"""``fastvit app``: a web page on this machine over one model (Gradio, ``fastvit[app]``).

The model decides which tabs work: a classifier (Classify: top-5, the input the network
saw, train-time vs reparameterized latency), a MobileCLIP model (Zero-shot; Search over
``--photos DIR``), or a checkpoint of ``detect``/``segment``/``hand train`` (Detect,
Segment, Hand); the other tabs say what they need.

Examples::

    fastvit app --checkpoint runs/t8/best.safetensors          # http://127.0.0.1:7860
    fastvit app --model fastvit_t8 --pretrained in1k --port 8080
    fastvit app --model MobileCLIP2-S0 --pretrained dfndr2b --photos ~/Pictures
    fastvit app --checkpoint runs/det --host 0.0.0.0            # reachable from the network
    fastvit app --checkpoint runs/t8/best.safetensors --export-space space/
"""

from __future__ import annotations

import argparse
import sys

from fastvit.app.state import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from fastvit.cli.arguments import CLIP_PRETRAINED_HELP, TAGS_HELP, add_compute
from fastvit.errors import ConfigError
from fastvit.models import list_models
from fastvit.run.device import cpu_threads, resolve_device

MAX_EXAMPLES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastvit.clip.models import CLIP_MODELS

    group = parser.add_argument_group("model (one, shared by every tab)")
    group.add_argument("--model", metavar="NAME", choices=list_models("all") + list(CLIP_MODELS),
                       help="a FastViT variant (" + ", ".join(list_models()) + "...) or a "
                       "MobileCLIP model as open_clip names it (" + ", ".join(CLIP_MODELS)
                       + ")")
    group.add_argument("--checkpoint", metavar="PATH",
                       help="a whole trained model: a classifier's file (any layout predict "
                       "reads), an open_clip whole-model file (with a MobileCLIP --model), or "
                       "a checkpoint / run folder of fastvit detect|segment|hand train")
    group.add_argument("--pretrained", metavar="TAG|PATH|URL|hf-hub:ID",
                       help="published weights used as the whole model: " + TAGS_HELP
                       + "; for a MobileCLIP --model: " + CLIP_PRETRAINED_HELP)
    group.add_argument("--mano", metavar="FILE",
                       help="the converted MANO model (.npz) a hand checkpoint needs")
    page = parser.add_argument_group("page")
    page.add_argument("--photos", metavar="DIR",
                      help="a folder of photos the Search tab ranks by text (MobileCLIP); its "
                      "embeddings are cached inside it, in .fastvit-embeddings/")
    page.add_argument("--examples", nargs="+", metavar="IMAGE|DIR",
                      help="images offered to pick in the image tabs (default: the first "
                      f"{MAX_EXAMPLES} of --photos)")
    page.add_argument("--host", default="127.0.0.1",
                      help="address to listen on; 0.0.0.0 makes the page reachable from "
                      "other machines")
    page.add_argument("--port", type=int, default=7860, metavar="N")
    page.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                      help="largest upload, in pixels (width x height)")
    page.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_BYTES / 2**20,
                      metavar="MB", help="largest upload, in megabytes")
    page.add_argument("--export-space", metavar="DIR",
                      help="write a Hugging Face Space (app.py, requirements.txt, README.md, "
                      "the package and the weights file) into DIR instead of serving")
    add_compute(parser, amp=False)


def main(args: argparse.Namespace) -> int:
    from fastvit.app import UploadLimits, export_space, load_app_model, serve
    from fastvit.extras import require

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: a port is 1..65535")
    limits = UploadLimits(args.max_pixels, int(args.max_upload_mb * 2**20))
    examples = []
    if args.export_space is None:
        require("gradio", "fastvit app", "app")  # before the model loads
        if args.examples or args.photos:
            from fastvit.deploy.predict import find_images

            examples = find_images(args.examples or [args.photos])[0][:MAX_EXAMPLES]
    with cpu_threads(args.threads):
        app = load_app_model(args.model, args.checkpoint, args.pretrained, mano=args.mano,
                             device=resolve_device(args.device))
        if args.export_space is not None:
            written = export_space(app, args.export_space, limits=limits)
            print(f"wrote a Hugging Face Space for {app.name} into {args.export_space}: "
                  f"{', '.join(p.name for p in written)}", file=sys.stderr)
            return 0
        photos = f"; photos {args.photos}" if args.photos else ""
        print(f"fastvit app: {app.name} ({app.kind}, weights: {app.source}, {app.device}"
              f"{photos}); uploads up to {limits.max_bytes / 2**20:g} MB and "
              f"{limits.max_pixels:,} pixels\nserving http://{args.host}:{args.port} "
              f"(Ctrl-C stops)", file=sys.stderr)
        serve(app, photos=args.photos, limits=limits, host=args.host, port=args.port,
              examples=examples)
    return 0
