"""Data pipeline: ImageFolder datasets, recipe transforms, batch mixing, digits, loaders.

What a ``--data`` value names (ImageFolder, WebDataset shards, a Hugging Face dataset)
is decided in :mod:`fastvit.data.sources`; shards live in :mod:`fastvit.data.shards`,
Hugging Face datasets in :mod:`fastvit.data.hf_datasets`.

Typical training use::

    train_ds, val_ds, classes = build_image_folder(
        root, train_transform=build_train_transform(256), eval_transform=eval_transform(cfg))
    loader = DataLoader(train_ds, batch_size=..., collate_fn=collate_skip_bad, ...)
    for images, targets, skipped in loader:   # a Batch (NamedTuple)
        if images is None:                     # every image of this batch was unreadable
            continue
        images, soft_targets = mixing(images, targets)

``skipped`` holds the paths of unreadable images dropped from that batch (it
travels inside the batch, so it works with DataLoader worker processes).
"""

from fastvit.data.datasets import (
    BAD_IMAGE_MODES,
    IMAGE_EXTENSIONS,
    BadSample,
    Batch,
    ImageFolderDataset,
    build_image_folder,
    check_same_classes,
    collate_skip_bad,
    find_split,
    load_rgb,
    split_batch,
)
from fastvit.data.digits import DIGIT_CLASSES, DigitsDataset, build_digits
from fastvit.data.loaders import ShardedEvalSampler, build_eval_loader, dist_rank_world
from fastvit.data.mixing import MixupCutmix, SoftTargetCrossEntropy, smooth_one_hot
from fastvit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NoisyRandAugment,
    build_train_transform,
    eval_resize_size,
    interpolation_mode,
    parse_rand_augment,
)

__all__ = [
    "BAD_IMAGE_MODES",
    "DIGIT_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "BadSample",
    "Batch",
    "DigitsDataset",
    "ImageFolderDataset",
    "MixupCutmix",
    "NoisyRandAugment",
    "ShardedEvalSampler",
    "SoftTargetCrossEntropy",
    "build_digits",
    "build_eval_loader",
    "build_image_folder",
    "build_train_transform",
    "check_same_classes",
    "collate_skip_bad",
    "dist_rank_world",
    "eval_resize_size",
    "interpolation_mode",
    "find_split",
    "load_rgb",
    "parse_rand_augment",
    "smooth_one_hot",
    "split_batch",
]
