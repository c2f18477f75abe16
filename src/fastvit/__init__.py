"""fastvit: train, verify, reparameterize, deploy and benchmark FastViT.

The names below are the public API. Heavier entry points (the model pipeline)
are imported on first use, so ``import fastvit`` stays cheap.
"""

from __future__ import annotations

import os
from typing import Any

# Good neighbours: PyTorch's OpenMP threads spin ~3 ms at every barrier by default, and
# with more busy threads than cores (training beside an export, a test run or another
# model) training collapsed 3-10x; sleeping at once cost ~40% alone. fastvit.openmp_wait asks
# for a ~10 us spin, then sleep (docs/deployment.md). Read once, when torch loads its
# OpenMP runtime: it applies when fastvit is imported before torch (the fastvit command
# always is). FASTVIT_SPIN=1 or OMP_WAIT_POLICY / GOMP_SPINCOUNT of your own win.
from fastvit.openmp_wait import openmp_wait_to_set

os.environ.update(openmp_wait_to_set())

from fastvit.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from fastvit.factory import BUILDERS, create_model
from fastvit.models import (
    VARIANTS,
    FastVit,
    count_gmacs,
    count_params,
    deploy_form,
    is_fused,
    list_models,
    max_abs_difference,
    randomize_model_stats,
    reparameterize,
)

_LAZY = {"Loaded": "fastvit.pipeline", "load_model": "fastvit.pipeline",
         "eval_transform": "fastvit.pipeline", "save_pretrained": "fastvit.publish",
         "push_to_hub": "fastvit.publish", "list_weights": "fastvit.weights",
         "resolve_weights": "fastvit.weights"}

globals().update(BUILDERS)  # fastvit.fastvit_t8() ... fastvit.fastvit_mci4()

__all__ = [
    "VARIANTS", "FastVit", "Loaded", "count_gmacs", "count_params", "create_model",
    "deploy_form", "eval_transform", "list_weights", "push_to_hub", "resolve_weights",
    "save_pretrained", "is_fused", "list_models", "load_checkpoint", "load_model",
    "max_abs_difference", "randomize_model_stats", "read_checkpoint", "reparameterize",
    "save_checkpoint", *BUILDERS,
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastvit' has no attribute {name!r}")
