"""Optional dependencies: a missing one is one line naming the extra that installs it.

The core (``pip install fastvit``) trains, evaluates and predicts in PyTorch.
Some features need more, grouped as pip extras (``pyproject.toml``)::

    export   onnx, onnxruntime, onnxscript, coremltools   fastvit export, --runtime onnx, int8
    tasks    pycocotools, smplx                           fastvit detect, fastvit hand
    train    tensorboard, scikit-learn                    TensorBoard logs, --data digits
    clip     open_clip_torch                              MobileCLIP text towers: zeroshot, search
    app      gradio                                       fastvit app (a local web page)
    openvino openvino, nncf                               --format openvino, --runtime openvino
    data     webdataset, datasets                         --data shards / datasets, fastvit shards
    mlflow   mlflow-skinny                                --log-to mlflow
    wandb    wandb                                        --log-to wandb

Every import of an optional package goes through :func:`require`, which raises
:class:`MissingExtraError` (a :class:`~fastvit.errors.FastVitError`: the command
line prints it as one line) instead of a traceback::

    fastvit detect needs pycocotools: pip install 'fastvit[tasks]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fastvit.errors import FastVitError

#: top-level import name -> the extra that installs it
EXTRAS: dict[str, str] = {
    "onnx": "export", "onnxruntime": "export", "onnxscript": "export", "onnx_ir": "export",
    "coremltools": "export", "pycocotools": "tasks", "smplx": "tasks",
    "tensorboard": "train", "sklearn": "train", "open_clip": "clip",
    "gradio": "app",
    "openvino": "openvino", "nncf": "openvino",
    "webdataset": "data", "braceexpand": "data", "datasets": "data", "fsspec": "data",
    "mlflow": "mlflow", "wandb": "wandb",
}
#: import names whose pip distribution is spelled differently
PIP_NAMES: dict[str, str] = {"sklearn": "scikit-learn", "onnx_ir": "onnx-ir",
                             "huggingface_hub": "huggingface-hub", "open_clip": "open_clip_torch",
                             "mlflow": "mlflow-skinny"}


class MissingExtraError(FastVitError, ImportError):
    """An optional dependency of the feature asked for is not installed."""


def install_hint(module: str, extra: str | None = None) -> str:
    """``pip install 'fastvit[tasks]'`` for ``pycocotools`` (or ``pip install NAME`` for a
    package outside every extra)."""
    top = module.split(".")[0]
    extra = extra or EXTRAS.get(top)
    if extra:
        return f"pip install 'fastvit[{extra}]'"
    return f"pip install {PIP_NAMES.get(top, top)}"


def missing_message(module: str, feature: str, extra: str | None = None) -> str:
    top = module.split(".")[0]
    return f"{feature} needs {PIP_NAMES.get(top, top)}: {install_hint(module, extra)}"


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"pycocotools.coco"``) for ``feature`` (e.g. ``"fastvit
    detect"``), or raise :class:`MissingExtraError` naming what to install. ``extra``
    overrides the table (:data:`EXTRAS`) for packages it does not list."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(missing_message(module, feature, extra)) from err


def available(module: str) -> bool:
    """Whether ``module`` imports (for features that are skipped, not required)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
