"""``create_model`` and the seven variant factories.

The model core (:mod:`fastvit.models`) builds networks and never opens files;
this module sits one floor up so that a model can be created *with weights*:
a checkpoint file of any supported layout (:mod:`fastvit.checkpoints`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastvit.checkpoints import load_checkpoint
from fastvit.errors import ConfigError
from fastvit.models import VARIANTS, FastVit, list_models


def create_model(name: str, *, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0, inference_mode: bool = False,
                 checkpoint: str | Path | dict | None = None, **overrides: Any) -> FastVit:
    """Build a FastViT variant by name, optionally loading weights of any supported layout.

    ``overrides`` go to :class:`fastvit.models.FastVit` (``features_only``,
    ``out_indices``, ``drop_rate``, ``lkc_act``, ``layer_scale_init``...). A fused
    checkpoint loaded into a train-time model fuses the model first (see
    :func:`fastvit.load_checkpoint`).
    """
    if name not in VARIANTS:
        raise ConfigError(f"unknown FastViT variant {name!r}; choose one of: "
                          f"{', '.join(list_models())}")
    model = FastVit(VARIANTS[name], num_classes=num_classes, in_chans=in_chans,
                    drop_path_rate=drop_path_rate, inference_mode=inference_mode,
                    variant=name, **overrides)
    if checkpoint is not None:
        model = load_checkpoint(model, checkpoint)
    return model


def _factory(name: str):
    def build(**kwargs: Any) -> FastVit:
        return create_model(name, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"Build {name} (see :func:`fastvit.create_model` for arguments)."
    return build


fastvit_t8 = _factory("fastvit_t8")
fastvit_t12 = _factory("fastvit_t12")
fastvit_s12 = _factory("fastvit_s12")
fastvit_sa12 = _factory("fastvit_sa12")
fastvit_sa24 = _factory("fastvit_sa24")
fastvit_sa36 = _factory("fastvit_sa36")
fastvit_ma36 = _factory("fastvit_ma36")
