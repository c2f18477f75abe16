"""Top-k classes of images, in PyTorch or ONNX Runtime (``fastvit predict``).

Class names come from the checkpoint (our safetensors metadata ``class_names``)
or the exported ONNX file, else ImageNet's names for a 1000-class model.
Images are preprocessed with the variant's eval transform (or what the ONNX
file's metadata asks for, e.g. raw pixels for a ``--raw-pixels`` export) and
run in batches. Every image is read before anything is printed, so one bad
file gives one error naming it and no partial output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastvit.deploy.metadata import transform_for_file
from fastvit.errors import ConfigError, DataError
from fastvit.labels import default_class_names
from fastvit.models import VARIANTS, base_cfg
from fastvit.pipeline import Loaded, eval_transform, load_model

RUNTIMES = ("eager", "onnx")


@dataclass
class Predictor:
    """Preprocessing, a batched forward and the names of the classes."""

    transform: Callable[[torch.Tensor], torch.Tensor]
    forward: Callable[[torch.Tensor], np.ndarray]  # batch -> logits
    class_names: list[str] | None
    max_batch: int | None = None  # a static-batch ONNX file takes exactly this many
    source: str = ""  # where the weights came from (a path, or "random weights")

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


def eager_predictor(loaded: Loaded, image_size: int | None = None,
                    device: torch.device | str = "cpu") -> Predictor:
    """Predictor over a loaded model, with its eval transform and labels."""
    model = loaded.model.eval().to(device)

    def forward(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model(batch.to(device)).float().cpu().numpy()
    return Predictor(eval_transform(loaded.cfg, image_size), forward, loaded.labels,
                     source=loaded.source)


def onnx_predictor(path: str | Path, *, model_name: str | None, image_size: int | None,
                   class_names: list[str] | None) -> Predictor:
    """Predictor over an ONNX file (ours carries its preprocessing and class names)."""
    from fastvit.deploy.onnx_runtime import ort_session, read_onnx_metadata

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
    spec_name = name if name in VARIANTS else "fastvit_t8"
    transform = transform_for_file(meta, base_cfg(spec_name, VARIANTS[spec_name], 0), image_size)
    input_meta = session.get_inputs()[0]
    static = input_meta.shape[0] if isinstance(input_meta.shape[0], int) else None
    num_outputs = session.get_outputs()[0].shape[-1]
    if class_names is None and "fastvit.class_names" in meta:
        class_names = json.loads(meta["fastvit.class_names"])
    if class_names is None and isinstance(num_outputs, int):
        class_names = default_class_names(num_outputs)

    def forward(batch: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_meta.name: batch.numpy()})[0]
    return Predictor(transform, forward, class_names, static, source=str(path))


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


def build_predictor(variant: str | None = None, checkpoint: str | Path | None = None, *,
                    runtime: str = "eager", onnx_file: str | Path | None = None,
                    image_size: int | None = None, workdir: str | Path | None = None,
                    ema: bool = False, device: torch.device | str = "cpu") -> Predictor:
    """A predictor for ``fastvit predict``.

    ``eager``: the deploy form of :func:`fastvit.load_model` in PyTorch. ``onnx``:
    ``onnx_file`` (its own metadata names its preprocessing and labels; a
    checkpoint's class names win), or the model exported into ``workdir`` now.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if onnx_file is not None and runtime != "onnx":
        raise ConfigError("--onnx FILE needs --runtime onnx")
    if runtime == "onnx" and onnx_file is not None:
        names = None
        if checkpoint is not None:
            from fastvit.checkpoints import class_names_from_metadata, read_checkpoint
            from fastvit.weights import resolve_weights

            resolved = resolve_weights(checkpoint, variant)
            names = (class_names_from_metadata(read_checkpoint(resolved.path)[1])
                     or resolved.class_names)
        return onnx_predictor(onnx_file, model_name=variant, image_size=image_size,
                              class_names=names)
    loaded = load_model(variant, checkpoint, ema=ema)
    size = image_size or loaded.image_size
    if runtime == "eager":
        return eager_predictor(loaded, size, device)
    if workdir is None:
        raise ConfigError("exporting for --runtime onnx needs a working folder")
    from fastvit.deploy.metadata import export_metadata
    from fastvit.deploy.onnx_export import export_onnx

    path = Path(workdir) / "model.onnx"
    export_onnx(loaded.model, path, image_size=size, dynamic_batch=True,
                metadata=export_metadata(loaded, size, raw_pixels=False))
    predictor = onnx_predictor(path, model_name=loaded.variant, image_size=size,
                               class_names=loaded.labels)
    predictor.source = loaded.source
    return predictor
