"""Seeded, stratified hold-out splits (a validation set carved out of a training set)."""

from __future__ import annotations

import torch

from fastvit.errors import ConfigError


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-class split: ``round(n_c * val_fraction)`` of each class held out
    (at least one image of every class stays in training). Returns sorted index tensors."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in labels.unique(sorted=True):
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(round(len(members) * val_fraction), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values
