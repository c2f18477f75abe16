"""MAC counting: every term of a block, checked against its shapes by hand."""

import pytest
import torch
from torch import nn

from fastvit.models.counting import count_gmacs, count_params
from fastvit.models.layers import Attention, AttentionBlock


def _macs(module: nn.Module, side: int, channels: int) -> float:
    return count_gmacs(module, image_size=side, in_chans=channels) * 1e9


@pytest.mark.parametrize("dim,side", [(64, 8), (96, 5)])
def test_attention_mixer_counts_both_attention_matmuls(dim, side):
    """MHSA over N = side^2 tokens of C = dim channels: the qkv and output projections
    (N*C*3C + N*C*C) plus q @ k^T and attn @ v, N*N*C multiply-adds each, over all heads."""
    n = side * side
    projections = n * dim * 3 * dim + n * dim * dim
    attention = 2 * n * n * dim
    assert _macs(Attention(dim), side, dim) == projections + attention


def test_attention_block_is_mixer_plus_ffn():
    """An AttentionBlock adds the ConvFFN (a 7x7 depthwise conv and two 1x1 convs) to the
    mixer's count; BatchNorm and layer scale are elementwise and not counted."""
    dim, side, hidden = 64, 8, 256
    n = side * side
    ffn = n * dim * 7 * 7 + n * dim * hidden + n * hidden * dim
    block = AttentionBlock(dim, mlp_ratio=hidden / dim)
    assert _macs(block, side, dim) == _macs(block.token_mixer, side, dim) + ffn


def test_count_params_and_train_mode_is_restored():
    layer = nn.Conv2d(3, 8, 3)
    assert count_params(layer) == 8 * 3 * 3 * 3 + 8
    layer.train()
    count_gmacs(layer, image_size=8)
    assert layer.training
    assert count_gmacs(layer, image_size=8) * 1e9 == 6 * 6 * 8 * 27
    with torch.no_grad():
        assert layer(torch.zeros(1, 3, 8, 8)).shape == (1, 8, 6, 6)
