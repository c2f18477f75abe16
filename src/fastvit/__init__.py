"""fastvit: train, verify, reparameterize, deploy and benchmark FastViT."""

from fastvit.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from fastvit.model import VARIANTS, FastVit, create_model, list_models
from fastvit.reparam import is_fused, reparameterize
from fastvit.verify import max_abs_difference, randomize_model_stats

__all__ = [
    "VARIANTS",
    "FastVit",
    "create_model",
    "is_fused",
    "list_models",
    "load_checkpoint",
    "max_abs_difference",
    "randomize_model_stats",
    "read_checkpoint",
    "reparameterize",
    "save_checkpoint",
]
__version__ = "0.1.0"
