"""The EMA of the weights equals its closed form: the decay-weighted average of the steps."""

import pytest
import torch
from torch import nn

from fastvit.train.ema import build_ema


def closed_form_ema(values: list[float], decay: float) -> float:
    """``W_1`` after the first update (a copy), then ``decay * ema + (1 - decay) * W_t``,
    written out: ``decay**(k-1) * W_1 + sum_{t>=2} (1 - decay) * decay**(k-t) * W_t``."""
    k = len(values)
    return decay ** (k - 1) * values[0] + sum(
        (1 - decay) * decay ** (k - t) * values[t - 1] for t in range(2, k + 1))


def _set_all(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for tensor in (*model.parameters(), model[1].running_mean, model[1].running_var):
            tensor.fill_(value)


@pytest.mark.parametrize("decay", [0.75, 0.9])
def test_ema_is_the_decay_weighted_average_of_parameters_and_buffers(decay):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    _set_all(model, -7.0)  # the values at construction must not enter the average
    ema = build_ema(model, decay=decay)
    values = [1.0, 2.0, 4.0, -3.0, 0.5]
    for k, value in enumerate(values, start=1):
        _set_all(model, value)
        ema.update_parameters(model)
        expected = closed_form_ema(values[:k], decay)
        averaged = ema.module
        for name, tensor in (*averaged.named_parameters(),
                             ("running_mean", averaged[1].running_mean),
                             ("running_var", averaged[1].running_var)):
            assert torch.allclose(tensor, torch.full_like(tensor, expected), atol=1e-6), (
                f"{name} after {k} updates: {tensor.flatten()[0].item()} != {expected}")
    assert closed_form_ema([1.0, 2.0, 4.0], 0.75) == pytest.approx(1.9375)  # by hand
    assert ema.n_averaged.item() == len(values)


def test_ema_is_a_frozen_eval_copy_that_does_not_share_storage():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = build_ema(model, decay=0.9)
    ema.update_parameters(model)
    assert not ema.training and not ema.module.training
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(ema.module[0].weight, model[0].weight)
