"""Test helpers for export / predict / bench: small real data and a quickly fitted model.

The labelled set is scikit-learn's bundled handwritten digits written as PNG
files in ImageFolder layout, so the deployment code reads real image files
through its normal preprocessing (ImageNet normalization, resize + centre crop).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import fastvit
from fastvit.deploy import eval_preprocess

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


def fit_digits_model(steps: int = 60, batch: int = 64, seed: int = 0) -> fastvit.FastVit:
    """fastvit_t8 (10 classes) fitted on digits, preprocessed like deployment does.

    Held-out images (see :func:`split_indices` offsets >= 150) are never trained on.
    """
    torch.manual_seed(seed)
    images, labels = digit_images()
    train_idx = [i for i in range(len(labels)) if i not in set(split_indices(labels, 30, 150))]
    # The fused structure trains ~10x faster on CPU than the train-time branches.
    model = fastvit.create_model("fastvit_t8", num_classes=10, inference_mode=True)
    transform = eval_preprocess(model.default_cfg, DIGITS_SIZE)
    x = torch.stack([transform(torch.as_tensor(images[i]).permute(2, 0, 1)) for i in train_idx])
    y = torch.as_tensor(labels[train_idx])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    model.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(0, len(y), (batch,), generator=g)
        loss = F.cross_entropy(model(x[pick]), y[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def export_args(**overrides) -> argparse.Namespace:
    """The namespace ``fastvit export`` builds, with defaults, for calling helpers directly."""
    defaults = dict(model="fastvit_t8", checkpoint=None, format="onnx", image_size=None,
                    dynamic_batch=False, output=None, opset=18, exporter="dynamo",
                    raw_pixels=False, image_input=False, coreml_precision="fp16", int8=False,
                    calibration=None, calibration_size=128, eval=None, min_agreement=None)
    defaults.update(overrides)
    return argparse.Namespace(**defaults)
