"""Zero-shot classification with a CLIP model: labels become prompts, prompts become a
classifier, as open_clip computes it (Radford et al., 2021; open_clip's ``zero_shot``).

One prompt per label (``template.format(label)``, ``"a photo of a {}."`` by default);
image and text features L2-normalized; logits = ``exp(logit_scale)`` x cosine
(+ ``logit_bias`` where a model has one); probabilities = softmax over the labels.
:class:`ZeroShotClassifier` is an ``nn.Module`` from images to those logits, so it runs
through the same prediction (:func:`fastvit.deploy.predict.predict`: files, folders,
unreadable files) and evaluation (:class:`fastvit.evaluate.Evaluator`: top-1/top-5,
per-class accuracy) code as a trained classifier.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastvit.clip.model import ClipModel
from fastvit.errors import ConfigError, DataError
from fastvit.pipeline import eval_transform

DEFAULT_TEMPLATE = "a photo of a {}."


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """``"cat,dog"`` (or a list) -> ``["cat", "dog"]``, stripped; none or a repeated one is
    a ConfigError."""
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise ConfigError("no labels: give the class names, e.g. --labels cat,dog,car")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"label {repeated[0]!r} is given more than once")
    return names


def check_template(template: str) -> str:
    """A prompt template must hold ``{}`` (where the label goes) and nothing else to fill."""
    try:
        template.format("label")
    except (IndexError, KeyError, ValueError):
        raise ConfigError(f"template {template!r} is not a prompt with one {{}} for the label "
                          f"(e.g. \"a photo of a {{}}.\"); write a literal brace as {{{{ or "
                          f"}}}}") from None
    if "{}" not in template:
        raise ConfigError(f"template {template!r} has no {{}} where the label goes, e.g. "
                          f"\"a photo of a {{}}.\"")
    return template


def prompts(labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per label."""
    check_template(template)
    return [template.format(label) for label in labels]


class ZeroShotClassifier(nn.Module):
    """Images -> zero-shot logits over ``labels`` (the normalized text features of their
    prompts are computed once)."""

    def __init__(self, clip: ClipModel, labels: Sequence[str],
                 template: str = DEFAULT_TEMPLATE, *, prompt_labels: Sequence[str] | None = None
                 ) -> None:
        super().__init__()
        self.clip, self.labels, self.template = clip, parse_labels(labels), template
        texts = prompts(prompt_labels if prompt_labels is not None else self.labels, template)
        with torch.no_grad():
            self.register_buffer("text_features", clip.encode_text(texts))
        self.num_classes = len(self.labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.logits(self.clip.encode_image(images), self.text_features)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax over the labels, images x labels."""
        return self(images).float().softmax(dim=-1)


def classify(paths: Sequence[str | Path], classifier: ZeroShotClassifier, *,
             batch_size: int = 16, skippable: Collection[str | Path] = (),
             device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """``[{image, predictions: [{rank, index, label, probability}]}]`` of every image, all
    labels ranked. As ``fastvit predict``: a named file that cannot be read is a
    DataError; one in ``skippable`` (found in a folder) is logged and gets ``error``."""
    from fastvit.deploy.predict import Predictor, predict

    model = classifier.to(device).eval()

    def forward(batch: torch.Tensor):
        with torch.inference_mode():
            return model(batch.to(device)).float().cpu().numpy()

    predictor = Predictor(eval_transform(classifier.clip.cfg), forward, list(classifier.labels),
                          source=classifier.clip.source)
    return predict(paths, predictor, topk=classifier.num_classes, batch_size=batch_size,
                   skippable=skippable)


def folder_labels(folder: Path) -> list[str]:
    """The class folder names of ``folder`` (sorted), the labels of an ImageFolder."""
    from fastvit.data.robustness import class_folders

    names = class_folders(folder)
    if not names:
        raise DataError(f"{folder} has no class folders (expected DIR/<class>/<images>)")
    return names


def scored_folder(data: str | Path) -> tuple[Path, str]:
    """The folder ``--data DIR`` scores and its split name: ``DIR/val/`` when there is
    one, else ``DIR/train/``, else ``DIR`` itself holding class folders."""
    from fastvit.data import find_split
    from fastvit.data.datasets import has_split

    split = "val" if has_split(data, "val") else "train"
    return find_split(data, split), split


def evaluate_folder(clip: ClipModel, data: str | Path, template: str = DEFAULT_TEMPLATE, *,
                    batch_size: int = 64, workers: int = 0, device: torch.device | str = "cpu",
                    bad_images: str = "skip") -> dict[str, Any]:
    """Zero-shot top-1/top-5 and per-class accuracy on an ImageFolder, its folder names
    the labels (``_`` read as a space in the prompts). The result has the shape of
    :func:`fastvit.evaluate.run_evaluation`'s (``sets``, ``analysis``), so
    :func:`fastvit.evaluate.format_table` prints it."""
    from fastvit import error_analysis as ea
    from fastvit.evaluate import Evaluator

    check_template(template)
    folder, split = scored_folder(data)
    labels = folder_labels(folder)
    classifier = ZeroShotClassifier(clip, labels, template,
                                    prompt_labels=[n.replace("_", " ") for n in labels])
    classifier = classifier.to(device).eval()
    runner = Evaluator(classifier, eval_transform(clip.cfg), batch_size=batch_size,
                       workers=workers, device=device, bad_images=bad_images)
    row = runner.folder(folder, f"zero-shot {split}", {n: i for i, n in enumerate(labels)},
                        per_sample=True)
    samples = row.pop("samples")
    analysis = ea.class_report(samples, labels)
    analysis["worst_mistakes"] = ea.worst_mistakes(samples)
    if len(labels) > ea.MAX_CONFUSION_CLASSES:
        del analysis["confusion_matrix"]
    return {"model": clip.name, "tower": clip.tower, "checkpoint": clip.source,
            "template": template, "labels": labels, "folder": str(folder),
            "image_size": int(clip.cfg["input_size"][-1]), "crop_pct": clip.cfg["crop_pct"],
            "sets": {split: row}, "analysis": {"split": split, **analysis}}
