"""ImageNet-1k class names, offline.

torchvision ships the 1000 human-readable names inside its weight enums'
metadata, so no label file has to be downloaded or vendored; index ``i`` is
the ``i``-th sorted wnid (``fastvit/assets/imagenet_wnids.txt``), the order of
a sorted ImageNet ``train/`` folder.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order."""
    from torchvision.models import ResNet50_Weights

    names = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != 1000:  # pragma: no cover - guards a torchvision change
        raise RuntimeError(f"torchvision lists {len(names)} ImageNet classes, expected 1000")
    return names


def default_class_names(num_classes: int) -> list[str] | None:
    """ImageNet names for a 1000-class model, else ``None`` (the caller numbers classes)."""
    return list(imagenet_class_names()) if num_classes == 1000 else None


def unique_labels(names: list[str] | tuple[str, ...]) -> list[str]:
    """Names made unique by appending the class index to repeats.

    A checkpoint's own class names may repeat (raw ImageNet synset names do:
    "crane" the bird and the machine), and a label -> probability dictionary
    (Core ML's classifier output) would merge them.
    """
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({i})" if counts[name] > 1 else name for i, name in enumerate(names)]
