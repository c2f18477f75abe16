"""Test helpers for export / predict / bench: small real data and a quickly fitted model.

The labelled set is scikit-learn's bundled handwritten digits written as PNG
files in ImageFolder layout, so the deployment code reads real image files
through its normal preprocessing (ImageNet normalization, resize + centre crop).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import fastvit
from fastvit.pipeline import eval_transform

DIGITS_SIZE = 32  # train / export resolution of the fitted test model


def digit_images(size: int = DIGITS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as uint8 RGB arrays (N, size, size, 3) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    pixels = (big.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    return pixels.permute(0, 2, 3, 1).numpy().copy(), digits.target.copy()


def split_indices(labels: np.ndarray, per_class: int, offset: int) -> list[int]:
    """``per_class`` indices of each class, starting at the class's ``offset``-th sample."""
    picked = []
    for cls in range(10):
        members = np.flatnonzero(labels == cls)
        picked += members[offset:offset + per_class].tolist()
    return picked


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray,
                       indices: list[int]) -> Path:
    """``root/<digit>/<index>.png`` for the chosen samples."""
    for i in indices:
        folder = root / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root


HELD_OUT_OFFSET, HELD_OUT_PER_CLASS = 150, 30  # per class: samples 150..179 are never fitted


@torch.no_grad()
def fit_digits_model(seed: int = 0, randomize: bool = False) -> fastvit.FastVit:
    """A real 10-class digits classifier on fastvit_t8 features, in seconds.

    The network keeps its random initial weights and only its linear classifier
    is fitted: multinomial logistic regression on the pre-logits of the images,
    preprocessed exactly as deployment does (about 89% held-out accuracy).
    ``randomize`` randomizes BatchNorm statistics and layer scales first: deeper
    random features, less accurate and far more fragile under int8 (about 85%
    fp32/int8 agreement instead of about 98%). Returns the train-time (unfused)
    model in eval mode; held-out samples (:data:`HELD_OUT_OFFSET`) are not fitted.
    """
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(seed)
    images, labels = digit_images()
    held_out = set(split_indices(labels, HELD_OUT_PER_CLASS, HELD_OUT_OFFSET))
    train_idx = [i for i in range(len(labels)) if i not in held_out][::2]
    model = fastvit.create_model("fastvit_t8", num_classes=10)
    if randomize:
        fastvit.randomize_model_stats(model, seed=seed)
    model.eval()
    fused = fastvit.reparameterize(model)
    x = preprocess(images[train_idx], model.default_cfg)
    features = fused.forward_head(fused.forward_features(x), pre_logits=True).double()
    # One global scale (not per feature): keeps the classifier weights moderate, so the
    # logits are not a cancellation of huge terms that float32 runtimes round differently.
    mu, sigma = features.mean(0), features.std()
    probe = LogisticRegression(max_iter=3000, C=20.0)
    probe.fit(((features - mu) / sigma).numpy(), labels[train_idx])
    weight = torch.as_tensor(probe.coef_) / sigma  # undo the standardization
    bias = torch.as_tensor(probe.intercept_) - weight @ mu
    model.head.fc.weight.copy_(weight.float())
    model.head.fc.bias.copy_(bias.float())
    return model


def preprocess(images: np.ndarray, cfg: dict, size: int = DIGITS_SIZE) -> torch.Tensor:
    """Deployment preprocessing of uint8 HWC images into a normalized batch."""
    transform = eval_transform(cfg, size)
    return torch.stack([transform(torch.as_tensor(im).permute(2, 0, 1)) for im in images])


class DigitsAssets(argparse.Namespace):
    """Paths of the shared digits fixtures (see :func:`digits_assets`)."""


@lru_cache(maxsize=1)
def digits_assets() -> DigitsAssets:
    """Built once per test process (shared by the export, predict and bench tests):

    - ``checkpoint``: the fitted digits model (:func:`fit_digits_model`, train-time
      form) in our safetensors format with class names ``digit 0``..``digit 9``;
    - ``calibration``: ImageFolder of 10 training images per class;
    - ``val``: ImageFolder of held-out images (up to 30 per class);
    - ``onnx``: the fused model exported to ONNX at :data:`DIGITS_SIZE` (dynamic batch).
    """
    from fastvit.checkpoints import save_checkpoint
    from fastvit.deploy.metadata import export_metadata
    from fastvit.deploy.onnx_export import export_onnx
    from fastvit.pipeline import load_model

    root = Path(tempfile.mkdtemp(prefix="fastvit-deploy-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    images, labels = digit_images()
    assets = DigitsAssets(root=root, images=images, labels=labels,
                          class_names=[f"digit {i}" for i in range(10)])
    assets.checkpoint = root / "digits_t8.safetensors"
    save_checkpoint(fit_digits_model(), assets.checkpoint, class_names=assets.class_names)
    assets.calibration = write_image_folder(root / "calibration", images, labels,
                                            split_indices(labels, 10, 0))
    assets.val = write_image_folder(root / "val", images, labels,
                                    split_indices(labels, HELD_OUT_PER_CLASS, HELD_OUT_OFFSET))
    loaded = load_model(checkpoint=assets.checkpoint)
    assets.onnx = root / "digits_t8.onnx"
    export_onnx(loaded.model, assets.onnx, image_size=DIGITS_SIZE, dynamic_batch=True,
                metadata=export_metadata(loaded, DIGITS_SIZE, raw_pixels=False))
    return assets
