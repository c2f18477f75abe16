"""The one model an app process serves, what kind it is, and the uploads it accepts.

``fastvit app`` loads one model when it starts and every tab shares it: a classifier
(``--model NAME`` / ``--checkpoint FILE`` / ``--pretrained TAG``, as ``fastvit predict``
takes them), a MobileCLIP model (``--model MobileCLIP2-S0 ...``, as ``fastvit zeroshot``),
or a checkpoint of ``fastvit detect|segment|hand train``. :class:`AppModel` records which
it is, so a tab for another kind says so instead of failing.

Uploads are checked before they are decoded (bytes, then the pixel count read from the
header) and decoded by the function training uses (:func:`fastvit.data.load_rgb`, through
:func:`fastvit.deploy.predict.read_image`): a broken or oversized file is one
:class:`~fastvit.errors.DataError`, which the page shows as a message.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastvit.errors import CheckpointError, ConfigError, DataError

PathLike = str | os.PathLike

#: the kinds of model an app can serve, and the tabs each one drives
KINDS = ("classifier", "clip", "detection", "segmentation", "hand")
TASK_KINDS = ("detection", "segmentation", "hand")
#: what to start the app with for each kind (the message of a tab without its model)
NEEDS = {
    "classifier": "a classifier: fastvit app --checkpoint runs/t8/best.safetensors "
                  "(or --model fastvit_t8 --pretrained in1k)",
    "clip": "a MobileCLIP model: fastvit app --model MobileCLIP2-S0 --pretrained dfndr2b",
    "detection": "a checkpoint of fastvit detect train: fastvit app --checkpoint runs/det",
    "segmentation": "a checkpoint of fastvit segment train: fastvit app --checkpoint runs/seg",
    "hand": "a checkpoint of fastvit hand train and the MANO model: fastvit app "
            "--checkpoint runs/hand --mano mano_right.npz",
}
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: any camera photo, not a decompression bomb
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be: at most ``max_bytes`` on disk, ``max_pixels`` decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise ConfigError("--max-pixels and --max-upload-mb must be positive")


@dataclass
class AppModel:
    """The model of an app process. ``model`` is the loaded object of its ``kind``: a
    :class:`ClassifierPair`, a :class:`fastvit.clip.ClipModel` or a task's ``Loaded*``.
    ``name`` is shown in the page header, ``source`` where the weights came from."""

    kind: str
    model: Any
    name: str
    source: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    spec: dict[str, Any] = field(default_factory=dict)  # how it was asked for (--export-space)

    def has(self, kind: str) -> bool:
        return self.kind == kind

    def wrong_kind(self, kind: str, tab: str) -> str:
        """The message of tab ``tab`` (wanting ``kind``) when this model is another kind."""
        return (f"The {tab} tab needs {NEEDS[kind]}. This app serves {self.name} "
                f"({describe_kind(self.kind)}).")


def describe_kind(kind: str) -> str:
    return {"classifier": "a classifier: see the Classify tab",
            "clip": "a MobileCLIP model: see the Zero-shot and Search tabs",
            "detection": "a detection checkpoint: see the Detect tab",
            "segmentation": "a segmentation checkpoint: see the Segment tab",
            "hand": "a hand-mesh checkpoint: see the Hand tab"}[kind]


@dataclass
class ClassifierPair:
    """A classifier in both forms: ``train_time`` (None when the file holds fused weights,
    which cannot be unfused) and ``deploy`` (reparameterized, BatchNorms folded: what
    ``fastvit export`` ships), with the ``Loaded`` record (cfg, class names)."""

    loaded: Any  # fastvit.pipeline.Loaded
    train_time: torch.nn.Module | None
    deploy: torch.nn.Module


def task_of_checkpoint(path: PathLike) -> str | None:
    """``detection``/``segmentation``/``hand`` for a run checkpoint of those commands (or
    their run folder), else None (a classifier's file, or not a run checkpoint)."""
    from fastvit.run.store import load_run_checkpoint, resolve_trained

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file() and path.suffix in (".safetensors", ".npy", ".onnx"):
        return None
    try:
        state = load_run_checkpoint(resolve_trained(path))
    except CheckpointError:
        return None
    task = state.get("task")
    return task if task in TASK_KINDS else None


def load_app_model(model: str | None = None, checkpoint: PathLike | None = None,
                   pretrained: str | None = None, *, mano: PathLike | None = None,
                   device: torch.device | str = "cpu") -> AppModel:
    """Load the one model of an app: a MobileCLIP model when ``model`` is open_clip's name
    of one, a task model when ``checkpoint`` is a detect/segment/hand run checkpoint, else
    a classifier (train-time and deploy forms). Errors are the loaders' one-line ones."""
    from fastvit.clip.models import CLIP_MODELS

    if checkpoint and pretrained:
        raise ConfigError("give --checkpoint FILE or --pretrained TAG, not both")
    device = torch.device(device)
    spec = {"model": model, "checkpoint": str(checkpoint) if checkpoint else None,
            "pretrained": pretrained}
    if model in CLIP_MODELS:
        from fastvit.clip import load_clip

        clip = load_clip(model, checkpoint, pretrained).to(device)
        return AppModel("clip", clip, f"{model} ({clip.tower})", clip.source, device, spec)
    task = task_of_checkpoint(checkpoint) if checkpoint else None
    if task is not None:
        if model is not None:
            raise ConfigError(f"{checkpoint} is a {task} checkpoint: its variant comes from "
                              f"the file, drop --model")
        return AppModel(task, _load_task(task, checkpoint, mano, device),
                        f"{task} {Path(checkpoint).name}", str(checkpoint), device, spec)
    if mano is not None:
        raise ConfigError("--mano is for a hand checkpoint (fastvit hand train)")
    if not (model or checkpoint or pretrained):
        raise ConfigError("no model: give --checkpoint FILE, or --model NAME with "
                          "--pretrained TAG (--model alone: random weights)")
    pair = load_classifier_pair(model, checkpoint or pretrained)
    pair.deploy.to(device)
    if pair.train_time is not None:
        pair.train_time.to(device)
    loaded = pair.loaded
    return AppModel("classifier", pair, loaded.variant, loaded.source, device, spec)


def load_classifier_pair(model: str | None, weights: PathLike | str | None) -> ClassifierPair:
    """The classifier read once, in the file's form; the deploy form is a fused copy."""
    from fastvit.models import fold_batchnorms, is_fused, reparameterize
    from fastvit.pipeline import load_model

    loaded = load_model(model, weights, fused=None)
    if getattr(loaded.model, "features_only", False) or not loaded.num_classes:
        raise CheckpointError(f"{loaded.source} holds no classification head (a backbone "
                              f"or an embedding tower): nothing to classify with")
    loaded.model.eval()
    if is_fused(loaded.model):
        return ClassifierPair(loaded, None, fold_batchnorms(loaded.model))
    deploy = fold_batchnorms(reparameterize(copy.deepcopy(loaded.model), inplace=True))
    return ClassifierPair(loaded, loaded.model, deploy.eval())


def _load_task(task: str, checkpoint: PathLike, mano: PathLike | None,
               device: torch.device) -> Any:
    if task == "detection":
        from fastvit.tasks.detection.engine import load_detector

        return load_detector(checkpoint, device)
    if task == "segmentation":
        from fastvit.tasks.segmentation.engine import load_segmenter

        return load_segmenter(checkpoint, device)
    if mano is None:
        raise ConfigError(f"{checkpoint} is a hand-mesh checkpoint: give the MANO model too "
                          f"(--mano mano_right.npz, see fastvit hand convert-mano)")
    from fastvit.tasks.hand.engine import load_hand_mesh

    return load_hand_mesh(checkpoint, device, mano_path=mano)


def read_upload(path: PathLike | None, limits: UploadLimits) -> torch.Tensor:
    """An uploaded image as a uint8 RGB (3, H, W) tensor, decoded as training decodes;
    :class:`DataError` for no image, a file over the limits, or one that cannot be read."""
    from PIL import Image

    from fastvit.deploy.predict import read_image

    if path is None or str(path) == "":
        raise DataError("no image: upload one or pick an example")
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise DataError(f"the upload {name} is gone; upload it again")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise DataError(f"{name} is {size / 2**20:.1f} MB; this app takes images up to "
                        f"{limits.max_bytes / 2**20:.1f} MB (--max-upload-mb)")
    try:
        with Image.open(path) as header:  # reads the header only, not the pixels
            width, height = header.size
    except Image.DecompressionBombError:
        raise DataError(f"{name} has more pixels than any image should; this app takes at "
                        f"most {limits.max_pixels:,} pixels (--max-pixels)") from None
    except Exception:  # not an image PIL knows: the decoder below says why
        width = height = None
    if width is not None and height is not None and width * height > limits.max_pixels:
        raise DataError(f"{name} is {width}x{height} = {width * height:,} pixels; this app "
                        f"takes at most {limits.max_pixels:,} pixels (--max-pixels)")
    try:
        return read_image(path)
    except DataError as err:
        raise DataError(str(err).replace(str(path), name)) from None
