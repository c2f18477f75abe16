"""Top-k classes of images, in PyTorch, ONNX Runtime or OpenVINO (``fastvit predict``).

Class names come from the checkpoint (our safetensors metadata ``class_names``)
or the exported ONNX / OpenVINO file, else ImageNet's names for a 1000-class model.
OpenVINO runs an fp32 IR with an fp32 or bf16 precision hint, or an int8 IR
(``fastvit export --format openvino --int8``). ONNX Runtime and OpenVINO threads do
not spin between batches unless ``spin`` (see :mod:`fastvit.deploy.spinning`).
Inputs are files, folders (searched recursively) and glob patterns
(:func:`find_images`), or the evaluation split of a ``--data`` source
(:mod:`fastvit.deploy.predict_sources`). Images are preprocessed with the variant's eval
transform (or what the ONNX file's metadata asks for, e.g. raw pixels for a
``--raw-pixels`` export) and decoded and run one batch at a time. A named file
that cannot be read is an error naming it (nothing is printed or written);
one found in a folder is skipped with one line and an ``error`` entry.
"""

from __future__ import annotations

import csv
import functools
import glob
import io
import itertools
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastvit.deploy.metadata import transform_for_file
from fastvit.errors import ConfigError, DataError
from fastvit.labels import default_class_names
from fastvit.models import VARIANTS, base_cfg
from fastvit.pipeline import Loaded, eval_transform, load_model

RUNTIMES = ("eager", "onnx", "openvino")


@dataclass
class Predictor:
    """Preprocessing, a batched forward and the names of the classes."""

    transform: Callable[[torch.Tensor], torch.Tensor]
    forward: Callable[[torch.Tensor], np.ndarray]  # batch -> logits
    class_names: list[str] | None
    max_batch: int | None = None  # a static-batch ONNX file takes exactly this many
    source: str = ""  # where the weights came from (a path, or "random weights")
    #: ``(val_fraction, seed)`` the weights' training held out of a train split (their
    #: metadata): what ``predict --data`` scores of data without a val split
    held_out: tuple[float, int] | None = None

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


def _file_facts(path: Path, meta: dict[str, str], *, model_name: str | None,
                image_size: int | None, class_names: list[str] | None,
                num_outputs: object) -> tuple[Callable, list[str] | None]:
    """The transform and class names an exported file asks for (its metadata)."""
    name = meta.get("fastvit.variant", model_name)
    if model_name and name != model_name:
        raise ConfigError(f"{path} was exported from {name}, not {model_name}")
    spec_name = name if name in VARIANTS else "fastvit_t8"
    transform = transform_for_file(meta, base_cfg(spec_name, VARIANTS[spec_name], 0), image_size)
    if class_names is None and "fastvit.class_names" in meta:
        class_names = json.loads(meta["fastvit.class_names"])
    if class_names is None and isinstance(num_outputs, int):
        class_names = default_class_names(num_outputs)
    return transform, class_names


def onnx_predictor(path: str | Path, *, model_name: str | None, image_size: int | None,
                   class_names: list[str] | None, threads: int | None = None,
                   spin: bool | None = None) -> Predictor:
    """Predictor over an ONNX file (ours carries its preprocessing and class names)."""
    from fastvit.deploy.onnx_runtime import ort_session, read_onnx_metadata

    path = Path(path)
    if not path.is_file():
        raise DataError(f"ONNX file not found: {path}")
    try:
        session = ort_session(path, threads=threads, spinning=spin)
    except Exception as err:
        raise DataError(f"cannot load ONNX file {path}: {str(err).splitlines()[0]}") from None
    input_meta = session.get_inputs()[0]
    static = input_meta.shape[0] if isinstance(input_meta.shape[0], int) else None
    transform, class_names = _file_facts(
        path, read_onnx_metadata(path), model_name=model_name, image_size=image_size,
        class_names=class_names, num_outputs=session.get_outputs()[0].shape[-1])

    def forward(batch: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_meta.name: batch.numpy()})[0]
    return Predictor(transform, forward, class_names, static, source=str(path))


def openvino_predictor(path: str | Path, *, model_name: str | None, image_size: int | None,
                       class_names: list[str] | None, precision: str = "fp32",
                       threads: int | None = None, spin: bool | None = None) -> Predictor:
    """Predictor over an OpenVINO IR (``.xml``; fp32 run with the ``precision`` hint, or an
    int8 IR), with the preprocessing and class names its metadata records. A dynamic-batch
    IR is compiled at each batch size it runs (``IrRunner``: OpenVINO 2026.4 runs int8 IRs
    compiled with a dynamic batch wrongly on single images); batch 1 is compiled here, so
    an unreadable file fails before any image is read."""
    from fastvit.deploy.openvino_export import IrRunner, read_ir_metadata

    path = Path(path)
    if path.suffix != ".xml" or not path.is_file():
        raise DataError(f"OpenVINO IR (.xml) not found: {path}")
    try:
        run = IrRunner(path, threads=threads, precision=precision, spin=spin)
        shape = run.model.inputs[0].get_partial_shape()
        static = shape[0].get_length() if shape[0].is_static else None
        compiled = run.compile(static or 1)
        meta = read_ir_metadata(path)
    except (ConfigError, ImportError):
        raise
    except Exception as err:
        raise DataError(f"cannot load OpenVINO IR {path}: {str(err).splitlines()[0]}") from None
    out = compiled.outputs[0].get_partial_shape()
    transform, class_names = _file_facts(
        path, meta, model_name=model_name, image_size=image_size, class_names=class_names,
        num_outputs=out[out.rank.get_length() - 1].get_length() if out.is_static else None)

    def forward(batch: torch.Tensor) -> np.ndarray:
        return run(batch)[0]
    return Predictor(transform, forward, class_names, static, source=str(path))


def find_images(inputs: Sequence[str | Path]) -> tuple[list[Path], frozenset[Path]]:
    """The image files of ``inputs``: files as named, folders searched recursively (sorted),
    glob patterns (``"photos/**/*.jpg"``, quoted) expanded. Returns the files and those found
    by searching (an unreadable one of those is skipped; a named one is an error).

    Raises :class:`DataError` for a missing file or a folder / pattern without images.
    """
    from fastvit.data import IMAGE_EXTENSIONS

    files: list[Path] = []
    found: set[Path] = set()
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            hits = sorted(p for p in path.rglob("*")
                          if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            where = f"folder {path}"
        elif not path.exists() and glob.has_magic(item):
            hits = sorted(Path(p) for p in glob.glob(item, recursive=True)
                          if Path(p).suffix.lower() in IMAGE_EXTENSIONS and Path(p).is_file())
            where = f"pattern {item!r}"
        else:
            if not path.exists():
                raise DataError(f"image not found: {path}")
            files.append(path)
            continue
        if not hits:
            raise DataError(f"no images in {where} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        files += hits
        found.update(hits)
    return files, frozenset(found)


def predict(paths: Sequence[str | Path], predictor: Predictor, *, topk: int = 5,
            batch_size: int = 16, decoded: Sequence[torch.Tensor] | None = None,
            skippable: Collection[str | Path] = ()) -> list[dict]:
    """``[{image, predictions: [{rank, index, label, probability}]}]`` for every path, in
    order, decoding ``batch_size`` images at a time (``decoded``: already read with
    :func:`read_image`). An unreadable file raises :class:`DataError`, unless it is in
    ``skippable`` (found in a folder): then it is logged once and its entry holds
    ``error`` and no predictions."""
    from fastvit.data.bad_images import BadImageLog
    from fastvit.data.datasets import UnreadableImage

    skip = {str(p) for p in skippable}
    bad = BadImageLog()

    def entries() -> Iterator[tuple[dict, torch.Tensor | None]]:
        for i, path in enumerate(map(str, paths)):
            try:
                image = decoded[i] if decoded is not None else read_image(path)
            except DataError as err:
                if path not in skip:
                    raise
                reason = str(err).split(": ", 1)[-1]
                bad.add([UnreadableImage(path, reason)])
                yield {"image": path, "predictions": [], "error": reason}, None
                continue
            yield {"image": path, "predictions": []}, predictor.transform(image)
    return classify_rows(entries(), predictor, topk=topk, batch_size=batch_size)


def classify_rows(entries: Iterable[tuple[dict, torch.Tensor | None]], predictor: Predictor,
                  *, topk: int, batch_size: int) -> list[dict]:
    """The rows of ``entries`` (a row and its preprocessed image, or None for a skipped
    one), their ``predictions`` filled ``batch_size`` images at a time."""
    step = predictor.max_batch or batch_size
    results: list[dict] = []
    entries = iter(entries)
    while chunk := list(itertools.islice(entries, step)):
        kept = [(row, image) for row, image in chunk if image is not None]
        if kept:
            _classify(torch.stack([image for _, image in kept]), predictor, topk,
                      [row for row, _ in kept])
        results += [row for row, _ in chunk]
    return results


def _classify(batch: torch.Tensor, predictor: Predictor, topk: int, rows: list[dict]) -> None:
    probs = torch.as_tensor(predictor.forward(batch)).float().softmax(dim=1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    for row, vals, idxs in zip(rows, values, indices, strict=True):
        row["predictions"] = [{"rank": r + 1, "index": int(i), "label": predictor.label(int(i)),
                               "probability": float(v)}
                              for r, (v, i) in enumerate(zip(vals, idxs, strict=True))]


def format_results(results: list[dict]) -> str:
    lines = []
    for item in results:
        lines.append(item["image"])
        if item.get("label"):
            lines.append(f"  label: {item['label']}")
        if "error" in item:
            lines.append(f"  skipped: {item['error']}")
        for p in item["predictions"]:
            lines.append(f"  {p['rank']}. {100 * p['probability']:6.2f}%  {p['label']} "
                         f"(class {p['index']})")
    return "\n".join(lines)


def results_csv(results: list[dict], topk: int) -> str:
    """One row per image: ``image`` (and ``label``, the true class, for ``--data``), then
    ``label_k``, ``index_k``, ``probability_k`` for ranks 1..topk, then ``error`` (empty
    unless the file was skipped)."""
    labelled = any("label" in item for item in results)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", *(["label"] if labelled else []),
                     *(f"{col}_{k}" for k in range(1, topk + 1)
                       for col in ("label", "index", "probability")), "error"])
    for item in results:
        cells: list[object] = [item["image"], *([item.get("label", "")] if labelled else [])]
        for k in range(topk):
            if k < len(item["predictions"]):
                p = item["predictions"][k]
                cells += [p["label"], p["index"], f"{p['probability']:.6f}"]
            else:
                cells += ["", "", ""]
        writer.writerow([*cells, item.get("error", "")])
    return out.getvalue()


def _checkpoint_names(variant: str | None, checkpoint: str | Path | None) -> list[str] | None:
    if checkpoint is None:
        return None
    from fastvit.checkpoints import class_names_from_metadata, read_checkpoint
    from fastvit.weights import resolve_weights

    resolved = resolve_weights(checkpoint, variant)
    return class_names_from_metadata(read_checkpoint(resolved.path)[1]) or resolved.class_names


def build_predictor(variant: str | None = None, checkpoint: str | Path | None = None, *,
                    runtime: str = "eager", onnx_file: str | Path | None = None,
                    openvino_file: str | Path | None = None, precision: str = "fp32",
                    image_size: int | None = None, workdir: str | Path | None = None,
                    ema: bool = False, device: torch.device | str = "cpu",
                    threads: int | None = None, spin: bool | None = None) -> Predictor:
    """A predictor for ``fastvit predict``.

    ``eager``: the deploy form of :func:`fastvit.load_model` in PyTorch. ``onnx`` /
    ``openvino``: ``onnx_file`` / ``openvino_file`` (its own metadata names its
    preprocessing and labels; a checkpoint's class names win), or the model exported
    into ``workdir`` now. ``precision`` (OpenVINO): the fp32 or bf16 precision hint.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if onnx_file is not None and runtime != "onnx":
        raise ConfigError("--onnx FILE needs --runtime onnx")
    if openvino_file is not None and runtime != "openvino":
        raise ConfigError("--openvino FILE needs --runtime openvino")
    if precision != "fp32" and runtime != "openvino":
        raise ConfigError(f"--precision {precision} is an OpenVINO precision hint: it needs "
                          f"--runtime openvino")
    if runtime == "openvino":
        from fastvit.deploy.openvino_export import FORMAT, PRECISIONS

        FORMAT.require_installed()
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown --precision {precision!r}; choose from "
                              f"{', '.join(PRECISIONS)}")
    given = onnx_file if runtime == "onnx" else openvino_file
    files = {"onnx": onnx_predictor, "openvino": functools.partial(
        openvino_predictor, precision=precision)}
    if given is not None:
        return files[runtime](given, model_name=variant, image_size=image_size,
                              class_names=_checkpoint_names(variant, checkpoint),
                              threads=threads, spin=spin)
    from fastvit.checkpoints import val_split_from_metadata

    loaded = load_model(variant, checkpoint, ema=ema)
    size = image_size or loaded.image_size
    if runtime == "eager":
        predictor = eager_predictor(loaded, size, device)
        predictor.held_out = val_split_from_metadata(loaded.metadata)
        return predictor
    if workdir is None:
        raise ConfigError(f"exporting for --runtime {runtime} needs a working folder")
    from fastvit.deploy.export import export_model
    from fastvit.deploy.registry import export_format

    result = export_model(loaded, runtime, Path(workdir) / f"model{export_format(runtime).suffix}",
                          image_size=size, dynamic_batch=True)
    predictor = files[runtime](result.path, model_name=loaded.variant, image_size=size,
                               class_names=loaded.labels, threads=threads, spin=spin)
    predictor.source = loaded.source
    predictor.held_out = val_split_from_metadata(loaded.metadata)
    return predictor
