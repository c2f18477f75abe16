"""The files of a Hugging Face Space that serves the page of ``fastvit app``
(``fastvit app --export-space DIR``).

A Space runs ``app.py`` after installing ``requirements.txt``; its ``README.md`` front
matter names the SDK. The folder stands alone: it holds a copy of this fastvit package
(``fastvit/``, imported from the Space's working folder) and of the weights file when the
model is a local file (a tag or ``hf-hub:`` id is fetched by the Space when it starts).
A photo folder is not exported (Search then asks for one), nor the licensed MANO model
(a hand checkpoint cannot be exported).
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from fastvit.app.state import AppModel, UploadLimits
from fastvit.errors import ConfigError
from fastvit.files import atomic_path, atomic_write_text

#: what the Space installs besides fastvit's own requirements
SPACE_PACKAGES = ("gradio",)
CLIP_PACKAGES = ("open_clip_torch",)
CORE_PACKAGES = ("torch", "torchvision", "safetensors", "numpy", "pyyaml", "tqdm",
                 "matplotlib", "pillow")

APP_TEMPLATE = '''"""A Hugging Face Space serving the fastvit app page (written by fastvit app
--export-space)."""

from fastvit.app import UploadLimits, load_app_model, serve

MODEL = {model}
LIMITS = UploadLimits(max_pixels={max_pixels}, max_bytes={max_bytes})

serve(load_app_model(**MODEL), limits=LIMITS, host=None)
'''

README_TEMPLATE = """---
title: {title}
emoji: 🔎
colorFrom: blue
colorTo: green
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
---

# {title}

The page of `fastvit app` for {name} (weights: `{source}`): {tabs}.
Written by `fastvit app --export-space`; `pip install -r requirements.txt && python app.py`
runs it on your machine too (http://127.0.0.1:7860).
"""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def requirements(app: AppModel) -> list[str]:
    """The Space's ``requirements.txt`` lines: the versions installed here, pinned."""
    packages = CORE_PACKAGES + SPACE_PACKAGES + (CLIP_PACKAGES if app.kind == "clip" else ())
    if app.kind in ("detection", "hand"):
        packages += ("pycocotools",)
    lines = []
    for package in packages:
        version = _version(package)
        lines.append(f"{package}=={version}" if version else package)
    return lines


def _tabs(kind: str) -> str:
    return {"classifier": "Classify (top-5, the network's input, train-time vs "
                          "reparameterized latency)",
            "clip": "Zero-shot (labels you type)", "detection": "Detect",
            "segmentation": "Segment"}[kind]


def export_space(app: AppModel, out_dir: str | Path, *, limits: UploadLimits | None = None
                 ) -> list[Path]:
    """Write ``app.py``, ``requirements.txt``, ``README.md``, ``fastvit/`` and the weights
    file into ``out_dir``; returns the files written (the package copy as one entry)."""
    import fastvit

    if app.kind == "hand":
        raise ConfigError("a hand-mesh app needs the MANO model, whose license does not "
                          "allow shipping it in a Space: export another kind of model")
    limits = limits or UploadLimits()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {k: v for k, v in app.spec.items() if v is not None}
    written = []
    if spec.get("checkpoint"):
        source = Path(spec["checkpoint"])
        if source.is_dir():
            from fastvit.run.store import resolve_trained

            source = resolve_trained(source)
        target = out / source.name
        if source.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        spec["checkpoint"] = source.name
        written.append(target)
    package = out / "fastvit"
    staging = out / ".fastvit.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(Path(fastvit.__file__).parent, staging,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.rmtree(package, ignore_errors=True)
    staging.rename(package)
    written.append(package)
    code = APP_TEMPLATE.format(model=json.dumps(spec), max_pixels=limits.max_pixels,
                               max_bytes=limits.max_bytes)
    written.append(atomic_write_text(out / "app.py", code))
    written.append(atomic_write_text(out / "requirements.txt",
                                     "\n".join(requirements(app)) + "\n"))
    title = f"fastvit {app.name}"[:60]
    written.append(atomic_write_text(out / "README.md", README_TEMPLATE.format(
        title=title, gradio=_version("gradio") or "6.31.0", name=app.name, source=app.source,
        tabs=_tabs(app.kind))))
    return written
