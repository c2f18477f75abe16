"""What each tab of ``fastvit app`` computes, without the web page: plain functions over
the loaded model and a decoded upload, so they are tested and reused on their own.

The dense tasks call the functions their ``predict`` commands call
(:func:`~fastvit.tasks.detection.predict.predict_detections`,
:func:`~fastvit.tasks.segmentation.predict.predict_label_maps`,
:func:`~fastvit.tasks.hand.predict.predict_hand_meshes`), so the page shows exactly the
drawing the command line writes.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvit.app.state import ClassifierPair
from fastvit.errors import ConfigError
from fastvit.pipeline import eval_transform

log = logging.getLogger(__name__)


@dataclass
class Classification:
    """Top-k ``{label: probability}``, the network's input as an image, and latencies."""

    top: dict[str, float]
    network_input: np.ndarray  # uint8 H x W x 3: after resize/crop, de-normalized
    latency: dict[str, Any]


def network_view(x: torch.Tensor, cfg: dict[str, Any]) -> np.ndarray:
    """A normalized (3, H, W) input back in 0..255 pixels (the mean/std of ``cfg`` undone):
    what the network was given, as a picture."""
    mean = torch.tensor(cfg["mean"], dtype=x.dtype)[:, None, None]
    std = torch.tensor(cfg["std"], dtype=x.dtype)[:, None, None]
    pixels = (x * std + mean).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(1, 2, 0).numpy()


@torch.inference_mode()
def time_forward(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` forwards (after one warm-up)."""
    model(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        times.append(1000 * (time.perf_counter() - start))
    return times


@torch.inference_mode()
def classify(pair: ClassifierPair, image: torch.Tensor, *, topk: int = 5, repeats: int = 5
             ) -> Classification:
    """Top-``topk`` classes of a uint8 RGB image by the deploy form, the input it saw, and
    the median latency of the train-time and the deploy form on it (batch 1, ``repeats``
    timed runs each, interleaved so both see the same machine load)."""
    loaded = pair.loaded
    x = eval_transform(loaded.cfg, loaded.image_size)(image)
    device = next(pair.deploy.parameters()).device
    batch = x.unsqueeze(0).to(device)
    logits = pair.deploy(batch).float().cpu()[0]
    probs = logits.softmax(dim=0)
    values, indices = probs.topk(min(topk, probs.numel()))
    top = {loaded.label(int(i)): float(v) for v, i in zip(values, indices, strict=True)}
    latency: dict[str, Any] = {"image_size": loaded.image_size, "batch": 1,
                               "device": str(device), "threads": torch.get_num_threads(),
                               "repeats": repeats}
    deploy_ms: list[float] = []
    train_ms: list[float] = []
    for _ in range(max(1, repeats)):  # interleaved: one run of each per round
        deploy_ms += time_forward(pair.deploy, batch, 1)
        if pair.train_time is not None:
            train_ms += time_forward(pair.train_time, batch, 1)
    latency["deploy_ms"] = statistics.median(deploy_ms)
    if pair.train_time is not None:
        latency["train_time_ms"] = statistics.median(train_ms)
        latency["speedup"] = latency["train_time_ms"] / latency["deploy_ms"]
        train_logits = pair.train_time(batch).float().cpu()[0]
        latency["max_abs_logit_difference"] = float((train_logits - logits).abs().max())
    return Classification(top, network_view(x, loaded.cfg), latency)


def format_latency(latency: dict[str, Any]) -> str:
    """The latency table of the Classify tab (Markdown)."""
    where = (f"batch 1, {latency['image_size']} px, {latency['device']}, "
             f"{latency['threads']} thread(s), median of {latency['repeats']}")
    deploy = f"{latency['deploy_ms']:.1f} ms"
    if "train_time_ms" not in latency:
        return (f"| train-time | reparameterized |\n|---|---|\n| (the file holds fused "
                f"weights) | {deploy} |\n\n{where}")
    return (f"| train-time | reparameterized | speed-up |\n|---|---|---|\n"
            f"| {latency['train_time_ms']:.1f} ms | {deploy} | {latency['speedup']:.2f}x |"
            f"\n\n{where}; largest logit difference "
            f"{latency['max_abs_logit_difference']:.1e}")


@torch.inference_mode()
def zero_shot(clip: Any, image: torch.Tensor, labels: str | Sequence[str],
              template: str | None = None) -> dict[str, float]:
    """``{label: probability}`` of every label (comma-separated or a list) for one image,
    as ``fastvit zeroshot`` computes them."""
    from fastvit.clip.zeroshot import DEFAULT_TEMPLATE, ZeroShotClassifier, parse_labels

    classifier = ZeroShotClassifier(clip, parse_labels(labels), template or DEFAULT_TEMPLATE)
    x = eval_transform(clip.cfg)(image).unsqueeze(0).to(clip.device)
    probs = classifier.probabilities(x)[0].cpu()
    return {label: float(p) for label, p in zip(classifier.labels, probs, strict=True)}


def index_file(clip: Any, folder: Path) -> Path:
    """Where the embeddings of ``folder`` are cached: a hidden file inside it, one per
    CLIP model."""
    return folder / ".fastvit-embeddings" / f"{clip.name}.safetensors"


def index_photos(clip: Any, folder: str | Path, *, batch_size: int = 16,
                 progress: Callable[[int, int], None] | None = None) -> Any:
    """The :class:`~fastvit.clip.EmbeddingIndex` of the images under ``folder``: read from
    its cache file when that was made by the same model and weights from the same images
    (none newer than it), else embedded ``batch_size`` at a time (``progress(done,
    total)`` after each batch) and cached. Unreadable images are left out and listed."""
    from fastvit.clip import EmbeddingIndex, embed_images, read_index, write_index
    from fastvit.deploy.predict import find_images
    from fastvit.errors import DataError

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError(f"photo folder not found: {folder}")
    files = [p.resolve() for p in find_images([folder])[0]]
    cache = index_file(clip, folder)
    names = [str(p) for p in files]
    if cache.is_file():
        try:
            cached = read_index(cache)
        except DataError:
            cached = None
        newest = max(p.stat().st_mtime for p in files)
        if (cached is not None and cached.model == clip.name and cached.checkpoint ==
                clip.weights and sorted(cached.paths + list(cached.skipped)) == sorted(names)
                and newest <= cache.stat().st_mtime):
            if progress:
                progress(len(files), len(files))
            return cached
    parts, skipped = [], {}
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        try:
            part = embed_images(clip, chunk, batch_size=batch_size, skippable=chunk,
                                device=clip.device)
        except DataError:  # every image of the chunk unreadable
            skipped.update({str(p): "unreadable" for p in chunk})
        else:
            parts.append(part)
            skipped.update(part.skipped)
        if progress:
            progress(min(start + batch_size, len(files)), len(files))
    if not parts:
        raise DataError(f"no image under {folder} could be read")
    index = EmbeddingIndex(torch.cat([p.embeddings for p in parts]),
                           [path for p in parts for path in p.paths], clip.name, clip.weights,
                           None, parts[0].preprocessing, skipped)
    try:
        cache.parent.mkdir(exist_ok=True)
        write_index(index, cache)
    except OSError as err:  # a read-only folder: search works, the next start embeds again
        log.warning("fastvit app: the embeddings of %s are not cached (%s)", folder, err)
    return index


def search_photos(clip: Any, index: Any, text: str, top: int = 12
                  ) -> list[tuple[str, str]]:
    """``(image path, "score  name")`` of the ``top`` photos of ``index`` best matching
    ``text``, best first."""
    from fastvit.clip import search, text_query

    hits = search(index, text_query(clip, text), top)
    return [(hit["image"], f"{hit['score']:.3f}  {Path(hit['image']).name}") for hit in hits]


def _drawing(path: str | Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def detect(loaded: Any, image_path: str | Path, score_threshold: float = 0.5
           ) -> tuple[Any, list[dict]]:
    """The drawing ``fastvit detect predict`` writes for one image, and its detections."""
    from fastvit.tasks.detection.predict import predict_detections

    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError("the score threshold is between 0 and 1")
    with tempfile.TemporaryDirectory(prefix="fastvit-app-") as out:
        result = predict_detections(loaded, [image_path], out,
                                    score_threshold=score_threshold, log=lambda _: None)[0]
        return _drawing(result["drawing"]), result["detections"]


def segment(loaded: Any, image_path: str | Path) -> tuple[Any, list[int]]:
    """The overlay ``fastvit segment predict --overlay`` writes for one image, and the
    classes present."""
    from fastvit.tasks.segmentation.predict import predict_label_maps

    with tempfile.TemporaryDirectory(prefix="fastvit-app-") as out:
        item = predict_label_maps(loaded, [image_path], out, overlay=True,
                                  log=lambda _: None)[0]
        return _drawing(item["overlay_png"]), item["classes"]


def hand_mesh(loaded: Any, image_path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The mesh and skeleton drawing ``fastvit hand predict`` writes (``examples.png``) for
    one image, and its 3D joints (metres, root-relative)."""
    from fastvit.tasks.hand.predict import predict_hand_meshes

    with tempfile.TemporaryDirectory(prefix="fastvit-app-") as out:
        record = predict_hand_meshes(loaded, [image_path], out, batch_size=1, workers=0,
                                     num_examples=1)[0]
        return _drawing(Path(out) / "examples.png"), {"joints_3d": record["joints_3d"]}
