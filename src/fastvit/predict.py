"""``fastvit predict IMAGE...``: top-k classes of images, in PyTorch or ONNX Runtime.

Class names come from the checkpoint (our safetensors metadata ``class_names``)
or the exported ONNX file, else ImageNet's names for a 1000-class model.
Images are preprocessed with the variant's eval transform (or what the ONNX
file's metadata asks for, e.g. raw pixels for a ``--raw-pixels`` export) and
run in batches. Every image is read before anything is printed, so one bad
file gives one error naming it and no partial output.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastvit.deploy import (
    DeployModel,
    eval_preprocess,
    load_deploy_model,
    preprocess_from_metadata,
)
from fastvit.errors import ConfigError, DataError
from fastvit.labels import default_class_names
from fastvit.model import VARIANTS, default_cfg, list_models

RUNTIMES = ("eager", "onnx")


@dataclass
class Predictor:
    """Preprocessing, a batched forward and the names of the classes."""

    transform: Callable[[torch.Tensor], torch.Tensor]
    forward: Callable[[torch.Tensor], np.ndarray]  # batch -> logits
    class_names: list[str] | None
    max_batch: int | None = None  # a static-batch ONNX file takes exactly this many

    def label(self, index: int) -> str:
        if self.class_names is not None and index < len(self.class_names):
            return self.class_names[index]
        return f"class_{index}"


def read_image(path: str | Path) -> torch.Tensor:
    """uint8 RGB (3, H, W) tensor of an image file; :class:`DataError` naming the file."""
    from fastvit.data import load_rgb

    path = Path(path)
    if not path.exists():
        raise DataError(f"image not found: {path}")
    if not path.is_file():
        raise DataError(f"not an image file: {path}")
    try:
        return load_rgb(path)
    except Exception as err:  # decoders raise OSError, RuntimeError, ValueError...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot read image {path}: {reason}") from None


def eager_predictor(dm: DeployModel, image_size: int) -> Predictor:
    model = dm.model.eval()

    def forward(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model(batch).float().numpy()
    return Predictor(eval_preprocess(dm.default_cfg, image_size), forward, dm.class_names)


def onnx_predictor(path: str | Path, *, model_name: str | None, image_size: int | None,
                   class_names: list[str] | None) -> Predictor:
    """Predictor over an ONNX file (ours carries its preprocessing and class names)."""
    from fastvit.export import ort_session, read_onnx_metadata

    path = Path(path)
    if not path.is_file():
        raise DataError(f"ONNX file not found: {path}")
    try:
        session = ort_session(path)
    except Exception as err:
        raise DataError(f"cannot load ONNX file {path}: {str(err).splitlines()[0]}") from None
    meta = read_onnx_metadata(path)
    name = meta.get("fastvit.variant", model_name)
    if model_name and name != model_name:
        raise ConfigError(f"{path} was exported from {name}, not {model_name}")
    fallback = default_cfg(name, VARIANTS[name], 0) if name in VARIANTS else default_cfg(
        "fastvit_t8", VARIANTS["fastvit_t8"], 0)
    transform = preprocess_from_metadata(meta, fallback, image_size)
    input_meta = session.get_inputs()[0]
    static = input_meta.shape[0] if isinstance(input_meta.shape[0], int) else None
    num_outputs = session.get_outputs()[0].shape[-1]
    if class_names is None and "fastvit.class_names" in meta:
        class_names = json.loads(meta["fastvit.class_names"])
    if class_names is None and isinstance(num_outputs, int):
        class_names = default_class_names(num_outputs)

    def forward(batch: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_meta.name: batch.numpy()})[0]
    return Predictor(transform, forward, class_names, static)


def predict(paths: Sequence[str | Path], predictor: Predictor, *, topk: int = 5,
            batch_size: int = 16, decoded: Sequence[torch.Tensor] | None = None) -> list[dict]:
    """``[{image, predictions: [{rank, index, label, probability}]}]`` for every path
    (``decoded``: the images already read with :func:`read_image`)."""
    decoded = decoded if decoded is not None else [read_image(p) for p in paths]
    images = [predictor.transform(image) for image in decoded]
    step = predictor.max_batch or batch_size
    results = []
    for start in range(0, len(images), step):
        batch = torch.stack(images[start:start + step])
        logits = torch.as_tensor(predictor.forward(batch))
        probs = logits.float().softmax(dim=1)
        k = min(topk, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        for offset in range(batch.shape[0]):
            results.append({"image": str(paths[start + offset]), "predictions": [
                {"rank": r + 1, "index": int(i), "label": predictor.label(int(i)),
                 "probability": float(v)}
                for r, (v, i) in enumerate(zip(values[offset], indices[offset], strict=True))]})
    return results


def format_results(results: list[dict]) -> str:
    lines = []
    for item in results:
        lines.append(item["image"])
        for p in item["predictions"]:
            lines.append(f"  {p['rank']}. {100 * p['probability']:6.2f}%  {p['label']} "
                         f"(class {p['index']})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", choices=list_models(), metavar="NAME",
                        help="variant (needed for eager; ONNX files of ours know theirs)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="weights of any supported layout (default: random, with a warning)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="eager")
    parser.add_argument("--onnx", metavar="PATH",
                        help="ONNX file for --runtime onnx (default: export the model now)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="input side (default: the variant's / the ONNX file's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a list")


def _predictor(args: argparse.Namespace, scratch: Path) -> Predictor:
    if args.runtime == "onnx" and args.onnx:
        names = None
        if args.checkpoint:
            from fastvit.checkpoint import class_names_from_metadata, read_checkpoint

            names = class_names_from_metadata(read_checkpoint(args.checkpoint)[1])
        return onnx_predictor(args.onnx, model_name=args.model, image_size=args.image_size,
                              class_names=names)
    if not args.model:
        raise ConfigError("--model NAME is required (unless --runtime onnx --onnx FILE)")
    dm = load_deploy_model(args.model, args.checkpoint)
    size = args.image_size or dm.image_size
    if args.runtime == "eager":
        return eager_predictor(dm, size)
    from fastvit.export import export_metadata, export_onnx

    path = scratch / "model.onnx"
    export_onnx(dm.model, path, image_size=size, dynamic_batch=True,
                metadata=export_metadata(dm, size, raw_pixels=False))
    return onnx_predictor(path, model_name=args.model, image_size=size,
                          class_names=dm.class_names)


def main(args: argparse.Namespace) -> int:
    if args.topk < 1 or args.batch_size < 1:
        raise ConfigError("--topk and --batch-size must be >= 1")
    if args.onnx and args.runtime != "onnx":
        raise ConfigError("--onnx FILE needs --runtime onnx")
    decoded = [read_image(path) for path in args.images]  # a bad file fails before any model
    with tempfile.TemporaryDirectory(prefix="fastvit-predict-") as scratch:
        predictor = _predictor(args, Path(scratch))
        results = predict(args.images, predictor, topk=args.topk, batch_size=args.batch_size,
                          decoded=decoded)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0
