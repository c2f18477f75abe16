"""Classification training: recipes, the trainer, distillation, EMA, the digits demo.

Public entry points (imported lazily so ``fastvit train --help`` stays fast):
``fit(config, resume=None)``, ``TrainConfig``, ``load_recipe(name_or_path)``,
``build_config(recipe, values, overrides)``, ``apply_overrides(config,
["optim.lr=5e-4"])``, ``list_recipes()``. The run machinery they use (DDP,
checkpoints, the step loop) is :mod:`fastvit.run`.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "fit": "fastvit.train.trainer",
    "TrainConfig": "fastvit.train.config",
    "load_recipe": "fastvit.train.config",
    "build_config": "fastvit.train.config",
    "apply_overrides": "fastvit.run.recipes",
    "list_recipes": "fastvit.run.recipes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastvit.train' has no attribute {name!r}")
