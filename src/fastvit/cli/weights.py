"""``fastvit weights list|download|verify``: the official weights and the local cache.

Examples::

    fastvit weights list                                  # every variant and tag, cached or not
    fastvit weights list fastvit_mci0                     # MobileCLIP tower: apple_mclip, ...
    fastvit weights download fastvit_t8 fastvit_sa12 --tag in1k dist_in1k
    FASTVIT_CACHE=/shared/fastvit fastvit weights download all --tag all   # for air-gapped use
    fastvit weights download hf-hub:ORG/NAME
    fastvit weights verify                                # re-hash every cached file
"""

from __future__ import annotations

import argparse

from fastvit.cli.arguments import emit_json
from fastvit.models import list_models
from fastvit.weights.cache import download_weights, verify_cache, weights_table
from fastvit.weights.registry import CLIP_TAGS, TAGS


def _tags(values: list[str] | None) -> list[str] | None:
    return list(TAGS + CLIP_TAGS) if values and "all" in values else values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,download,verify}")
    formatter = parser.formatter_class
    cache_help = ("cache root (default: $FASTVIT_CACHE, else torch.hub's folder for URLs and "
                  "the Hugging Face cache for Hub files)")

    ls = sub.add_parser("list", help="the official weights per variant, and what is cached",
                        formatter_class=formatter)
    ls.add_argument("models", nargs="*", metavar="MODEL",
                    help="variants (default: all of " + ", ".join(list_models("all")) + ")")
    ls.add_argument("--tag", nargs="+", metavar="TAG",
                    help=f"only these tags ({', '.join(TAGS + CLIP_TAGS)})")
    ls.add_argument("--cache-dir", metavar="DIR", help=cache_help)
    ls.add_argument("--json", metavar="FILE", nargs="?", const="-",
                    help="write the rows as JSON to FILE (- or no value: stdout)")

    dl = sub.add_parser("download", help="fetch weights into the cache (e.g. before going "
                        "offline)", formatter_class=formatter)
    dl.add_argument("specs", nargs="+", metavar="MODEL|all|hf-hub:ID|URL")
    dl.add_argument("--tag", nargs="+", metavar="TAG",
                    help=f"tags to fetch for each variant: {', '.join(TAGS + CLIP_TAGS)} or "
                         f"all (default: in1k; MCi: its first CLIP tag)")
    dl.add_argument("--cache-dir", metavar="DIR", help=cache_help)
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.add_argument("--json", metavar="FILE", nargs="?", const="-")

    ver = sub.add_parser("verify", help="re-hash every cached FastViT weights file",
                         formatter_class=formatter)
    ver.add_argument("--cache-dir", metavar="DIR", help=cache_help)
    ver.add_argument("--json", metavar="FILE", nargs="?", const="-")


def format_weights_table(rows: list[dict]) -> str:
    lines = ["| weights | form | top-1 (paper) | Hugging Face Hub | cached |",
             "|---|---|---|---|---|"]
    for r in rows:
        top1 = "CLIP" if r["top1"] is None else f"{r['top1']:.1f}"
        lines.append(f"| {r['name']} | {r['form']} | {top1} | "
                     f"{r['hf_hub_id'] or '- (official URL only)'} | "
                     f"{r['cached'] or 'no'} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = weights_table(args.models or None, _tags(args.tag), cache_dir=args.cache_dir)
        if args.json != "-":
            print(format_weights_table(rows))
            print("\nload one with: fastvit.create_model('fastvit_t8', pretrained='in1k') or "
                  "--model fastvit_t8 --pretrained in1k")
        emit_json(args.json, rows)
        return 0
    if args.action == "download":
        rows = download_weights(args.specs, _tags(args.tag), cache_dir=args.cache_dir,
                                progress=False if args.no_progress else None)
        if args.json != "-":
            for r in rows:
                print(f"{r['name']}: {r['path']} ({r['bytes'] / 2**20:.1f} MiB, {r['source']})")
        emit_json(args.json, rows)
        return 0
    rows = verify_cache(args.cache_dir)
    if args.json != "-":
        for r in rows:
            detail = f" ({r['detail']})" if r.get("detail") else ""
            print(f"{r['status']:>10}  {r['path']}{detail}")
        print(f"{len(rows)} files checked, {sum(r['status'] == 'mismatch' for r in rows)} "
              f"mismatched" if rows else "nothing cached")
    emit_json(args.json, rows)
    return 1 if any(r["status"] == "mismatch" for r in rows) else 0
