"""open_clip MobileCLIP models with random weights, saved as whole-model files.

open_clip builds the reference (its text tower and timm's ``fastvit_mciN`` as the image
tower); the image tower's BatchNorm statistics and layer scales are randomized, and the
logit scale set to MobileCLIP's trained value (log 100), so parity checks see non-trivial
numbers. Each model is built and written once per session.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

import fastvit  # noqa: E402

SIZE = 64


@functools.cache
def reference(name: str, seed: int = 0) -> torch.nn.Module:
    """open_clip's ``name`` with random weights, eval mode."""
    logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded ..."
    torch.manual_seed(seed)
    model = open_clip.create_model(name).eval()
    fastvit.randomize_model_stats(model.visual.trunk, seed=seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    return model


def save_whole_model(model: torch.nn.Module, path: Path, image_size: int | None = None
                     ) -> Path:
    """The model's state dict as open_clip's ``open_clip_model.safetensors`` holds it;
    ``image_size`` recorded as its preprocessing (``pretrained_cfg`` metadata), so the
    commands run at that size."""
    from safetensors.torch import save_file

    metadata = None
    if image_size is not None:
        metadata = {"pretrained_cfg": json.dumps({"input_size": [3, image_size, image_size]})}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata=metadata)
    return path


@pytest.fixture(scope="session")
def s0_file(tmp_path_factory) -> Path:
    """MobileCLIP2-S0, recorded as taking 64x64 images (the commands' tests run fast)."""
    return save_whole_model(reference("MobileCLIP2-S0"),
                            tmp_path_factory.mktemp("clip") / "s0.safetensors", SIZE)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small inputs on one intra-op thread: no OpenMP thrashing next to other processes
    (two threads sharing busy cores made these forwards ten times slower)."""
