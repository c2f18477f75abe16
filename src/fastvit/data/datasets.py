"""ImageFolder datasets that decode fast and survive bad files.

Layout: ``ROOT/{train,val}/<class>/<image>`` (``validation/`` is accepted for
``val`` as in the official ImageNet release). Images are decoded with
``torchvision.io`` (libjpeg-turbo / libpng straight to a uint8 tensor) and fall
back to PIL for formats it does not read (BMP, TIFF, ...). Every image becomes
3-channel RGB whatever its mode (grayscale, RGBA, palette, CMYK, 16-bit).

A corrupt or truncated file does not kill a multi-day run: in ``"skip"`` mode
``__getitem__`` returns a :class:`BadSample` marker that :func:`collate_skip_bad`
removes from the batch while carrying the file's path and the reason inside the
batch (an :class:`UnreadableImage`), so they reach the main process even from
DataLoader worker processes, which reports each file once
(:class:`fastvit.data.bad_images.BadImageLog`). ``"error"`` mode stops with the
path instead.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, default_collate
from torchvision.datasets import DatasetFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from fastvit.errors import DataError

# torchvision >= 0.29 announces that its decoders move to TorchCodec; they still
# work and are the fastest decoder installed, so keep the notice out of every batch.
_DECODER_NOTICE = "The image decoding and encoding capabilities of TorchVision"

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(sorted(set(IMG_EXTENSIONS) | {".gif", ".jfif"}))
BAD_IMAGE_MODES = ("skip", "error")
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validation")}
# Formats torchvision.io decodes natively; anything else goes straight to PIL.
_NATIVE_SUFFIXES = {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".webp"}


def find_split(root: str | os.PathLike, split: str) -> Path:
    """The folder of ``split`` ("train" or "val"; "val" also matches ``validation/``).

    A root of class folders without any split folder (``DIR/<class>/<image>``, the
    layout torchvision's ``ImageFolder`` reads) is its own ``train`` split; the trainer
    then holds a seeded fraction of it out for validation.
    """
    root = Path(root)
    if split not in SPLIT_ALIASES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(SPLIT_ALIASES)}")
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    for name in SPLIT_ALIASES[split]:
        if (root / name).is_dir():
            return root / name
    if split == "train" and _is_class_root(root):
        return root
    tried = " or ".join(f"{root / n}/" for n in SPLIT_ALIASES[split])
    hint = " (or class folders directly: DIR/<class>/<images>)" if split == "train" else ""
    raise DataError(f"no {split} split in {root}: expected {tried}{hint}")


def _is_class_root(root: Path) -> bool:
    """Class folders holding images and no split folder at all (``val/``, ``train/``)."""
    folders = list_class_dirs(root)
    splits = {name for names in SPLIT_ALIASES.values() for name in names}
    return bool(folders) and not splits & set(folders) and \
        count_images(root / folders[0], limit=1) > 0


def list_class_dirs(folder: str | os.PathLike) -> list[str]:
    """Sorted sub-folder names of ``folder``, hidden ones (``.cache``...) excluded."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def count_images(folder: str | os.PathLike, limit: int | None = None) -> int:
    """Image files under ``folder`` (recursively), counting stops at ``limit``."""
    count = 0
    for _dirpath, _dirs, files in os.walk(folder):
        count += sum(1 for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
        if limit is not None and count >= limit:
            return limit
    return count


def load_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a ``uint8`` RGB tensor of shape (3, H, W).

    Raises ``OSError``/``RuntimeError``/``ValueError`` for unreadable files;
    :class:`ImageFolderDataset` turns those into a skip or a :class:`DataError`.
    """
    path = str(path)
    image = decode_native(path) if Path(path).suffix.lower() in _NATIVE_SUFFIXES else None
    if image is not None:
        return image
    with Image.open(path) as pil:
        return pil_rgb(pil)


def decode_native(source: str | torch.Tensor) -> torch.Tensor | None:
    """``torchvision.io`` (libjpeg-turbo / libpng) on a file path or a buffer of encoded
    bytes: a ``uint8`` RGB tensor, or None for a format variant it refuses (PIL reads
    those). Corrupt data raises ``RuntimeError``."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _DECODER_NOTICE, DeprecationWarning)
            image = decode_image(source, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        if _is_corrupt_message(str(err)):
            raise
        return None
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = TF.to_dtype(image, torch.uint8, scale=True)
    return image


def pil_rgb(pil: Image.Image) -> torch.Tensor:
    """An opened PIL image, loaded, as a ``uint8`` RGB tensor (16-bit grey scaled down)."""
    pil.load()
    return TF.pil_to_tensor(_to_rgb(pil))


def _is_corrupt_message(message: str) -> bool:
    message = message.lower()
    return any(word in message for word in ("truncated", "incomplete", "corrupt", "premature"))


def _to_rgb(pil: Image.Image) -> Image.Image:
    if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
        pil = pil.point(lambda v: v * (1 / 256)).convert("L")
    return pil if pil.mode == "RGB" else pil.convert("RGB")


@dataclass(frozen=True)
class BadSample:
    """Stand-in for an image that could not be decoded (dropped by the collate)."""

    path: str
    reason: str


class UnreadableImage(str):
    """The path of an image that could not be decoded, with ``reason`` attached.

    A ``str`` (what ``Batch.skipped`` always held), so counting, JSON and
    comparisons see a path; it pickles with its reason across DataLoader workers.
    """

    reason: str

    def __new__(cls, path: str, reason: str = "") -> UnreadableImage:
        item = super().__new__(cls, path)
        item.reason = reason
        return item

    def __reduce__(self) -> tuple:
        return UnreadableImage, (str(self), self.reason)


class Batch(NamedTuple):
    """What :func:`collate_skip_bad` returns.

    ``images``/``targets`` are ``None`` when every sample of the batch was bad;
    ``skipped`` lists the paths dropped from this batch.
    """

    images: torch.Tensor | None
    targets: torch.Tensor | None
    skipped: tuple[str, ...]


def collate_skip_bad(batch: Sequence[Any]) -> Batch:
    """``default_collate`` that drops :class:`BadSample` markers and reports their paths."""
    good = [item for item in batch if not isinstance(item, BadSample)]
    skipped = tuple(UnreadableImage(item.path, item.reason) for item in batch
                    if isinstance(item, BadSample))
    if not good:
        return Batch(None, None, skipped)
    images, targets = default_collate(good)
    return Batch(images, targets, skipped)


def split_batch(batch: Any) -> tuple[torch.Tensor | None, torch.Tensor | None, tuple[str, ...]]:
    """Accept a :class:`Batch` or a plain ``(images, targets)`` pair."""
    if isinstance(batch, Batch):
        return batch.images, batch.targets, batch.skipped
    if isinstance(batch, (list, tuple)) and len(batch) == 3:
        return batch[0], batch[1], tuple(batch[2])
    images, targets = batch
    return images, targets, ()



def read_sample(name: str | Callable[[], str], read: Callable[[], Any], label: int,
                transform: Callable | None, bad_images: str, what: str
                ) -> tuple[Any, int] | BadSample:
    """``(transform(read()), label)``, or, for an image that cannot be read, a
    :class:`BadSample` (``bad_images="skip"``) or one :class:`DataError` naming it
    (``name``, or a call that builds it: only a bad sample needs its name).

    Every source (folders, shards, datasets) reads through here, so a broken image is
    handled the same way wherever it comes from; no warning is printed here: the main
    process reports each one once (:class:`~fastvit.data.bad_images.BadImageLog`).
    """
    try:
        image = read()
    except (OSError, RuntimeError, ValueError, Image.DecompressionBombError) as err:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        name = name if isinstance(name, str) else name()
        if bad_images == "error":
            raise DataError(f"unreadable image {name} ({reason}); use bad_images='skip' "
                            f"(--bad-images skip) to skip such {what}") from None
        return BadSample(name, reason)
    if transform is not None:
        image = transform(image)
    return image, label


class ImageFolderDataset(DatasetFolder):
    """``<root>/<class>/<image>`` -> ``(transform(uint8 RGB tensor), class index)``.

    ``class_to_idx`` pins the label of each class folder (e.g. ImageNet-A's 200
    wnid folders to their ImageNet-1k indices); only the listed folders are read
    and all of them must exist. Without it classes are the sorted folder names.
    """

    def __init__(self, root_split_dir: str | os.PathLike, transform: Callable | None = None,
                 bad_images: str = "skip", class_to_idx: dict[str, int] | None = None) -> None:
        if bad_images not in BAD_IMAGE_MODES:
            raise DataError(f"bad_images must be one of {BAD_IMAGE_MODES}, got {bad_images!r}")
        root = Path(root_split_dir)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        self._fixed_class_to_idx = dict(class_to_idx) if class_to_idx is not None else None
        self.bad_images = bad_images
        try:
            super().__init__(str(root), loader=load_rgb, extensions=IMAGE_EXTENSIONS,
                             transform=transform)
        except FileNotFoundError as err:  # torchvision's "no class folder" / "empty class"
            raise DataError(_explain_scan_error(root, err)) from None
        if not self.samples:
            raise DataError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        folders = list_class_dirs(directory)
        if self._fixed_class_to_idx is None:
            if not folders:
                raise DataError(f"no class folders in {directory}: expected "
                                f"{directory}/<class name>/<image files>")
            return folders, {name: i for i, name in enumerate(folders)}
        unknown = sorted(set(folders) - set(self._fixed_class_to_idx))
        if unknown:
            raise DataError(f"{directory} has class folders the label map does not know: "
                            f"{_preview(unknown)}")
        classes = sorted(self._fixed_class_to_idx, key=self._fixed_class_to_idx.get)
        return classes, dict(self._fixed_class_to_idx)

    def __getitem__(self, index: int) -> tuple[Any, int] | BadSample:
        path, target = self.samples[index]
        return read_sample(path, lambda: self.loader(path), target, self.transform,
                           self.bad_images, "files")


def _explain_scan_error(root: Path, err: FileNotFoundError) -> str:
    text = str(err)
    if "Couldn't find any class folder" in text:
        return f"no class folders in {root}: expected {root}/<class name>/<image files>"
    if "Found no valid file for the classes" in text:
        names = text.split("classes", 1)[1].split(".")[0].strip(" :")
        return (f"class folders without images in {root}: {names} "
                f"(supported extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return f"cannot read {root}: {text}"


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def check_same_classes(train_classes: Sequence[str], val_classes: Sequence[str],
                       train_dir: Path, val_dir: Path) -> None:
    """Raise a :class:`DataError` naming the classes only one split has."""
    only_train = sorted(set(train_classes) - set(val_classes))
    only_val = sorted(set(val_classes) - set(train_classes))
    if only_train or only_val:
        parts = []
        if only_train:
            parts.append(f"only in {train_dir}: {_preview(only_train)}")
        if only_val:
            parts.append(f"only in {val_dir}: {_preview(only_val)}")
        raise DataError("train and val class folders differ; " + "; ".join(parts))


def build_image_folder(root: str | os.PathLike, *, train_transform: Callable | None,
                       eval_transform: Callable | None, bad_images: str = "skip",
                       val_fraction: float | None = None, seed: int = 0
                       ) -> tuple[Dataset, Dataset, list[str]]:
    """Train and val datasets of ``root`` with identical class indices (checked).

    Without a ``val/`` (or ``validation/``) folder and with ``val_fraction``, a
    seeded, stratified ``val_fraction`` of ``train/`` is held out instead (see
    :func:`describe_val_split`); without either, a :class:`DataError`.
    """
    train_dir = find_split(root, "train")
    if val_fraction is not None and not has_split(root, "val"):
        from fastvit.data.splits import stratified_split

        full = ImageFolderDataset(train_dir, train_transform, bad_images)
        held = copy.copy(full)  # same files and classes, the eval transform
        held.transform = eval_transform
        train_idx, val_idx = stratified_split(torch.as_tensor(full.targets), val_fraction, seed)
        return (Subset(full, train_idx.tolist()), Subset(held, val_idx.tolist()),
                list(full.classes))
    val_dir = find_split(root, "val")
    train = ImageFolderDataset(train_dir, train_transform, bad_images)
    val_classes = list_class_dirs(val_dir)
    check_same_classes(train.classes, val_classes, train_dir, val_dir)
    val = ImageFolderDataset(val_dir, eval_transform, bad_images, class_to_idx=train.class_to_idx)
    return train, val, list(train.classes)


def has_split(root: str | os.PathLike, split: str) -> bool:
    """Whether ``root`` has a folder for ``split`` (``val`` also matches ``validation``)."""
    return any((Path(root) / name).is_dir() for name in SPLIT_ALIASES[split])


def describe_val_split(root: str | os.PathLike, val_fraction: float, seed: int) -> str:
    """Where the held-out images of :func:`build_image_folder` come from, in words."""
    if has_split(root, "val"):
        return f"{find_split(root, 'val')}/"
    return (f"{val_fraction:.0%} of each class of {find_split(root, 'train')}/ held out "
            f"(no val/ folder; stratified, seed {seed})")


def keep_held_out(dataset: ImageFolderDataset, val_fraction: float, seed: int) -> None:
    """Reduce ``dataset`` (a ``train/`` folder) to the images :func:`build_image_folder`
    held out of it for ``val_fraction`` and ``seed``: the same files whatever label map
    the dataset was built with (the split is drawn over sorted class folders, as there)."""
    from fastvit.data.splits import stratified_split

    root = Path(dataset.root)
    order = {name: i for i, name in enumerate(list_class_dirs(root))}
    labels = torch.tensor([order[Path(path).relative_to(root).parts[0]]
                           for path, _ in dataset.samples])
    _, val_idx = stratified_split(labels, val_fraction, seed)
    dataset.samples = [dataset.samples[i] for i in val_idx.tolist()]
    dataset.imgs = dataset.samples
    dataset.targets = [target for _, target in dataset.samples]
