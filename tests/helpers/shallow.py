"""Variants cut to one block per stage: every kind of layer a variant has, once.

Exporters, lowerings and harnesses meet a model layer by layer, so a variant's depth
repeats work without adding a case; tests that are about those layers (not about the
variant's accuracy or size) use these to stay fast.
"""

from __future__ import annotations

import dataclasses

from fastvit.models import (
    VARIANTS,
    FastVit,
    VariantSpec,
    fold_batchnorms,
    randomize_model_stats,
    reparameterize,
)


def one_block_per_stage_spec(name: str) -> VariantSpec:
    spec = VARIANTS[name]
    return dataclasses.replace(spec, depths=(1,) * len(spec.depths))


def one_block_per_stage(name: str) -> FastVit:
    """The train-time variant with every stage cut to one block (random weights)."""
    return FastVit(one_block_per_stage_spec(name), variant=name)


def one_block_per_stage_fused(name: str, seed: int = 11) -> FastVit:
    """The deploy form, BN statistics and layer scales randomized before fusing."""
    model = one_block_per_stage(name)
    randomize_model_stats(model, seed=seed)
    return fold_batchnorms(reparameterize(model))
