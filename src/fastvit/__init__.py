"""fastvit: train, verify, reparameterize, deploy and benchmark FastViT."""

from fastvit.model import VARIANTS, FastVit, create_model, list_models
from fastvit.reparam import is_fused, reparameterize
from fastvit.verify import max_abs_difference, randomize_model_stats


def load_checkpoint(*args, **kwargs):  # noqa: D103 - documented in fastvit.checkpoint
    from fastvit.checkpoint import load_checkpoint as _load

    return _load(*args, **kwargs)


__all__ = [
    "VARIANTS",
    "FastVit",
    "create_model",
    "is_fused",
    "list_models",
    "load_checkpoint",
    "max_abs_difference",
    "randomize_model_stats",
    "reparameterize",
]
__version__ = "0.1.0"
