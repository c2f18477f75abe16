"""``fastvit bench MODEL --pick``: which runtime and precision to deploy on this machine.

There is no single best runtime: on a Xeon with AMX, OpenVINO's bf16 and int8 win;
on an AMD Zen 4 ONNX Runtime does. So ``--pick`` builds every installed runtime of
one model here, checks each against eager fp32 on the same images (top-1 agreement,
max |diff| relative to the largest output, and top-1 accuracy when the images are a
labelled ImageFolder), times them interleaved in one process, and names two winners:

* **fastest fp32-exact**: max |diff| <= :data:`EXACT_TOLERANCE` x max |eager output|;
* **fastest within 1 point**: top-1 accuracy within :data:`MAX_POINTS` points of eager
  on labelled images, else top-1 agreement >= 99% (which bounds any accuracy change
  to 1 point).

int8 runtimes are calibrated on half the images and scored on the other half (random
inputs without ``--images``: then agreement says little; give real images).
The report names the CPU and its ISA features (``pick.json``).
"""

from __future__ import annotations

import json
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fastvit.bench.machine import cpu_isa, cpu_name, isa_summary
from fastvit.bench.peers import PeerUnavailable
from fastvit.bench.run import BenchConfig, time_interleaved
from fastvit.bench.runtimes import (
    PRECISION,
    RUNTIMES,
    Runtime,
    build_subject,
    expand_models,
    make_runtime,
)
from fastvit.deploy.spinning import policy
from fastvit.errors import ConfigError, DataError
from fastvit.files import atomic_write_text
from fastvit.models import VARIANTS, base_cfg

#: what --pick tries by default: every runtime but torch.compile (minutes of compiling on a
#: small CPU; name it in --runtimes to include it)
PICK_RUNTIMES = tuple(r for r in RUNTIMES if r != "compile")
EXACT_TOLERANCE = 1e-4
MAX_POINTS = 1.0
MIN_AGREEMENT = 0.99


@dataclass
class PickImages:
    """Images preprocessed for the model: int8 calibration and scoring halves."""

    calibration: list[torch.Tensor]
    scored: list[torch.Tensor]
    labels: list[int] | None
    described: str


def pick_images(folder: str | Path | None, cfg: dict, image_size: int, count: int,
                num_classes: int) -> PickImages:
    """``count`` images of the ImageFolder ``folder`` (spread over its classes; labels kept
    when the model has that many classes), or ``count`` random N(0, 1) inputs."""
    if count < 2:
        raise ConfigError(f"--pick-images must be >= 2 (half calibrate int8), got {count}")
    if folder is None:
        g = torch.Generator().manual_seed(0)
        images = [torch.randn(3, image_size, image_size, generator=g) for _ in range(count)]
        return PickImages(images[::2], images[1::2], None,
                          f"{len(images[1::2])} random N(0, 1) inputs (no --images given)")
    from fastvit.deploy.calibration import open_folder, spread_indices
    from fastvit.pipeline import eval_transform

    dataset = open_folder(folder, eval_transform(cfg, image_size), "--images")
    picked = spread_indices([t for _, t in dataset.samples], count)
    pairs = [dataset[i] for i in picked]
    pairs = [p for p in pairs if isinstance(p, tuple)]
    if len(pairs) < 2:
        raise DataError(f"--images {folder}: fewer than 2 readable images")
    labelled = len(dataset.classes) <= num_classes
    scored = pairs[1::2]
    return PickImages([p[0] for p in pairs[::2]], [p[0] for p in scored],
                      [p[1] for p in scored] if labelled else None,
                      f"{len(scored)} images of {folder}" + (" (labelled)" if labelled else ""))


def judge(reference: np.ndarray, got: np.ndarray, labels: list[int] | None) -> dict:
    """Agreement of one runtime's outputs (N, C) with eager fp32's."""
    scale = max(float(np.abs(reference).max()), 1e-12)
    top1_ref, top1 = reference.argmax(axis=1), got.argmax(axis=1)
    row = {"top1_agreement": float((top1 == top1_ref).mean()),
           "max_abs_diff": float(np.abs(got - reference).max()),
           "max_rel_diff": float(np.abs(got - reference).max()) / scale}
    row["exact"] = row["max_rel_diff"] <= EXACT_TOLERANCE
    if labels is not None:
        y = np.asarray(labels)
        row["top1"] = float((top1 == y).mean())
        # from counts: 1 image of 100 is exactly 1.0 point (a difference of two means
        # rounds to 1.0000000000000009 and fails the <= 1 point rule)
        gained = int((top1 == y).sum()) - int((top1_ref == y).sum())
        row["top1_points_vs_eager"] = 100 * gained / len(y)
        row["within_1_point"] = abs(row["top1_points_vs_eager"]) <= MAX_POINTS
    else:
        row["within_1_point"] = row["top1_agreement"] >= MIN_AGREEMENT
    return row


def outputs(runtime: Runtime, images: list[torch.Tensor]) -> np.ndarray:
    return np.stack([runtime.forward(x.unsqueeze(0))[0] for x in images])


def pick_runtime(config: BenchConfig, *, images: str | Path | None = None, count: int = 32,
                 block: int = 5) -> dict:
    """Build, check and time every runtime of ``config.runtimes`` for the one FastViT
    variant of ``config.models``; the report with the two picks (see the module doc)."""
    models = expand_models(config.models)
    if len(models) != 1 or models[0] not in VARIANTS:
        raise ConfigError(f"--pick takes one FastViT variant, got {', '.join(models)}")
    if count < 2:
        raise ConfigError(f"--pick-images must be >= 2 (half calibrate int8), got {count}")
    device = torch.device(config.device)
    subject = build_subject(models[0], fused=True, features_only=False,
                            image_size=config.image_size, peer_image_size=None,
                            pretrained=config.pretrained)
    cfg = base_cfg(models[0], VARIANTS[models[0]], 0)
    data = pick_images(images, cfg, subject.image_size, count,
                       int(getattr(subject.model, "num_classes", 1000)))
    with torch.inference_mode():
        reference = np.stack([subject.model(x.unsqueeze(0))[0].float().numpy()
                              for x in data.scored])
    rows: dict[str, dict] = {}
    built: dict[str, Runtime] = {}
    with tempfile.TemporaryDirectory(prefix="fastvit-pick-") as scratch:
        for i, name in enumerate(tqdm(config.runtimes, desc="pick: build + check",
                                      unit="runtime")):
            row = {"runtime": name, "precision": PRECISION[name]}
            try:
                workdir = Path(scratch) / str(i)
                workdir.mkdir()
                runtime = make_runtime(subject, name, device=device, half=False,
                                       threads=config.threads, workdir=workdir,
                                       spin=config.spin, calibration=data.calibration)
                row.update(judge(reference, outputs(runtime, data.scored), data.labels),
                           status="ok")
                built[name] = runtime
            except PeerUnavailable as why:
                row.update(status="skipped", note=str(why))
            except Exception as err:  # one broken runtime must not lose the others
                row.update(status="failed", note=f"{type(err).__name__}: {err}".splitlines()[0])
            rows[name] = row
        timings = time_interleaved({n: r(config.batch_size) for n, r in built.items()},
                                   runs=config.runs, warmup=config.warmup,
                                   block=max(1, min(block, config.runs)))
    for name, timing in timings.items():
        rows[name].update(median_ms=timing.median_ms, p90_ms=timing.p90_ms, runs=timing.runs)
    ok = [r for r in rows.values() if r["status"] == "ok"]

    def fastest(key: str) -> str | None:
        chosen = [r for r in ok if r[key]]
        return min(chosen, key=lambda r: r["median_ms"])["runtime"] if chosen else None

    return {
        "command": pick_command(config, images, count),
        "model": models[0], "image_size": subject.image_size, "batch": config.batch_size,
        "threads": config.threads, "cpu": cpu_name(), "isa": cpu_isa(),
        "isa_summary": isa_summary(), "thread_policy": policy(config.spin),
        "scored_on": data.described,
        "criteria": {"fp32_exact": f"max |diff| <= {EXACT_TOLERANCE:g} x max |eager output|",
                     "within_1_point": (f"top-1 within {MAX_POINTS:g} point of eager"
                                        if data.labels is not None else
                                        f"top-1 agreement with eager >= {MIN_AGREEMENT:.0%}")},
        "pick": {"fp32_exact": fastest("exact"), "within_1_point": fastest("within_1_point")},
        "results": list(rows.values()),
    }


def pick_command(config: BenchConfig, images: str | Path | None, count: int) -> str:
    parts = ["fastvit", "bench", *config.models, "--pick", "--runtimes", *config.runtimes,
             "--image-size", str(config.image_size), "--batch-size", str(config.batch_size),
             "--runs", str(config.runs), "--warmup", str(config.warmup),
             "--threads", str(config.threads), "--pick-images", str(count),
             "--out", str(config.out)]
    if images is not None:
        parts += ["--images", str(images)]
    if config.pretrained:
        parts += ["--pretrained", str(config.pretrained)]
    if config.spin:
        parts.append("--spin")
    return shlex.join(parts)


def pick_table(report: dict) -> str:
    """The report as markdown: one row per runtime, then the picks."""
    eager = next((r["median_ms"] for r in report["results"]
                  if r["runtime"] == "eager" and "median_ms" in r), None)
    lines = [f"{report['model']} at {report['image_size']}x{report['image_size']}, batch "
             f"{report['batch']}, {report['threads']} threads on {report['cpu']} "
             f"({report['isa_summary']}); {report['thread_policy']}; checked on "
             f"{report['scored_on']}.", "",
             "| runtime | precision | median ms | x eager | top-1 agreement | max rel diff | "
             "fp32-exact | within 1 point | status |", "|" + "---|" * 9]
    for r in report["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['runtime']} | {r['precision']} | - | - | - | - | - | - | "
                         f"{r['status']}: {r.get('note', '')} |")
            continue
        ratio = f"{r['median_ms'] / eager:.2f}" if eager else "-"
        lines.append(f"| {r['runtime']} | {r['precision']} | {r['median_ms']:.2f} | {ratio} | "
                     f"{r['top1_agreement']:.1%} | {r['max_rel_diff']:.1e} | "
                     f"{'yes' if r['exact'] else 'no'} | "
                     f"{'yes' if r['within_1_point'] else 'no'} | ok |")
    pick = report["pick"]
    lines += ["", f"Deploy: fastest fp32-exact: {pick['fp32_exact']}; fastest within 1 point "
              f"top-1: {pick['within_1_point']} ({report['criteria']['within_1_point']})."]
    return "\n".join(lines)


def write_pick(report: dict, out: Path) -> Path:
    """``pick.json`` in ``out`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / "pick.json", json.dumps(report, indent=2) + "\n")
