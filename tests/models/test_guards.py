"""Guards on model utilities a restructure could silently turn into no-ops:
``set_grad_checkpointing`` and the attention term of ``fastvit.stats.count_gmacs``."""

from __future__ import annotations

import pytest
import torch

import fastvit
from fastvit.models.counting import count_gmacs
from tests.helpers.spies import block_forward_counts

# -- 4. gradient checkpointing recomputes every block ---------------------------------------


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_grad_checkpointing_recomputes_each_block_in_backward(name):
    model = fastvit.create_model(name, num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    plain = block_forward_counts(model, x)
    assert set(plain.values()) == {1}, plain
    model.set_grad_checkpointing(True)
    checkpointed = block_forward_counts(model, x)
    assert checkpointed.keys() == plain.keys()
    assert set(checkpointed.values()) == {2}, checkpointed  # forward + recomputation
    model.set_grad_checkpointing(False)
    assert set(block_forward_counts(model, x).values()) == {1}


# -- 5. GMACs: the attention matmuls exactly ------------------------------------------------


def test_gmacs_attention_term_is_exactly_two_matmuls_per_block(monkeypatch):
    """SA12 at 256x256: stage 4 is 8x8 = 64 tokens of dim 512 (16 heads x 32) in 2 blocks;
    Q K^T and attn @ V are 64 * 64 * 512 MACs each per block. The attention term is the
    count minus the count with the attention kernel replaced by a zero-cost stand-in."""
    sa12 = fastvit.reparameterize(fastvit.create_model("fastvit_sa12"))
    with_attention = count_gmacs(sa12, 256)
    calls: list[tuple[int, ...]] = []

    def no_attention(q, k, v, *args, **kwargs):
        calls.append(tuple(q.shape))
        return v.clone()

    # monkeypatched: torch.nn.functional.scaled_dot_product_attention (the attention kernel
    # fastvit.layers.Attention calls); the rest of the network is unchanged
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_attention)
    without = count_gmacs(sa12, 256)
    assert calls == [(1, 16, 64, 32)] * 2, "the stand-in did not replace the attention kernel"
    expected_macs = 2 * 2 * 64 * 64 * 512  # 2 blocks x (QK^T + attn@V)
    assert (with_attention - without) * 1e9 == pytest.approx(expected_macs, abs=0.5)
    # and the paper's 1.94 GMACs hold for the remainder plus that term
    assert with_attention == pytest.approx(1.94, abs=0.005 * 1.94 + 0.005)
