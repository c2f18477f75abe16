"""Reparameterization: exact equivalence, fused structure, idempotence, fused loading."""

import copy

import pytest
import torch
from torch import nn

import fastvit
from fastvit.models.layers import MobileOneBlock, ReparamLargeKernelConv, RepCPE, RepMixer
from tests.helpers.shallow import one_block_per_stage

ALL = fastvit.list_models()
TOL = 1e-5  # max |train - fused| relative to max |train output|


def randomized(name: str, seed: int = 0, **kw) -> nn.Module:
    model = fastvit.create_model(name, **kw).eval()
    return fastvit.randomize_model_stats(model, seed=seed)


def assert_fully_fused(model: nn.Module) -> None:
    for name, m in model.named_modules():
        assert not isinstance(m, nn.modules.batchnorm._BatchNorm) or _allowed_bn(name), name
        if isinstance(m, MobileOneBlock | ReparamLargeKernelConv | RepMixer | RepCPE):
            assert m.reparam_conv is not None, name
            for branch in ("identity", "conv_kxk", "conv_scale", "large_conv", "small_conv",
                           "norm", "mixer", "layer_scale", "pos_enc"):
                assert not hasattr(m, branch), f"{name}.{branch} left after fusing"
    assert fastvit.is_fused(model)


def _allowed_bn(name: str) -> bool:
    # The fused layout (official and timm) keeps ConvFFN's conv+BN and the attention
    # pre-norm: they are not train-time branches.
    return name.endswith("mlp.conv.bn") or (name.endswith(".norm") and "blocks" in name
                                             and "token_mixer" not in name)


@pytest.mark.parametrize("name", ALL)
def test_equivalence_small_input(name):
    model = randomized(name)
    fused = fastvit.reparameterize(model)
    assert fastvit.max_abs_difference(model, fused, (2, 3, 64, 64), relative=True) < TOL
    assert_fully_fused(fused)
    # the original is untouched (inplace=False)
    assert not fastvit.is_fused(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_equivalence_full_resolution(name):
    model = randomized(name, seed=1)
    fused = fastvit.reparameterize(model)
    assert fastvit.max_abs_difference(model, fused, (2, 3, 256, 256), relative=True) < TOL


def test_randomization_makes_the_check_meaningful():
    """A wrong fold must be caught: drop RepMixer's skip and the difference is large."""
    model = randomized("fastvit_t8")
    fused = fastvit.reparameterize(model)
    mixer = fused.stages[0].blocks[0].token_mixer.reparam_conv
    with torch.no_grad():
        mixer.weight[:, 0, 1, 1] -= 1.0
    assert fastvit.max_abs_difference(model, fused, (1, 3, 64, 64), relative=True) > 1e-3


def test_idempotent():
    model = randomized("fastvit_sa12")
    once = fastvit.reparameterize(model)
    twice = fastvit.reparameterize(once)
    assert list(once.state_dict()) == list(twice.state_dict())
    for k, v in once.state_dict().items():
        assert torch.equal(v, twice.state_dict()[k]), k
    fastvit.reparameterize(twice, inplace=True)  # harmless in place too
    assert fastvit.max_abs_difference(once, twice, (1, 3, 64, 64)) == 0.0


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_inference_mode_loads_fused_state_dict_exactly(name):
    fused = fastvit.reparameterize(randomized(name))
    direct = fastvit.create_model(name, inference_mode=True).eval()
    assert set(direct.state_dict()) == set(fused.state_dict())
    direct.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(direct(x), fused(x))
    assert fastvit.is_fused(direct)


def test_works_on_any_module_tree():
    """A detector-like wrapper holding a backbone and a bare block both fuse."""
    backbone = randomized("fastvit_t8", features_only=True)
    wrapper = nn.ModuleDict({"backbone": backbone, "neck": nn.Conv2d(384, 8, 1)})
    fused = fastvit.reparameterize(wrapper)
    assert fastvit.is_fused(fused)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone(x), fused["backbone"](x), strict=True):
            assert (a - b).abs().max() / a.abs().max() < TOL

    block = MobileOneBlock(8, 8, 3, num_conv_branches=3, use_se=True).eval()
    fastvit.randomize_model_stats(block)
    ref = copy.deepcopy(block)
    block.reparameterize()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.allclose(ref(x), block(x), atol=1e-5)


def test_grouped_identity_branch():
    """Identity folding for a grouped (not depthwise) conv: in/group = 4."""
    block = MobileOneBlock(8, 8, 3, groups=2, num_conv_branches=2).eval()
    fastvit.randomize_model_stats(block, seed=3)
    fused = fastvit.reparameterize(block)
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        assert torch.allclose(block(x), fused(x), atol=1e-5)


@pytest.mark.slow
def test_trace_and_compile_fused_model():
    # one block per stage: every layer Inductor generates code for, once (depth repeats them)
    model = fastvit.randomize_model_stats(one_block_per_stage("fastvit_t8").eval(), seed=0)
    fused = fastvit.reparameterize(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = fused(x)
        traced = torch.jit.trace(fused, x)
        assert torch.allclose(traced(x), ref, atol=1e-5)
        compiled = torch.compile(fused)
        assert torch.allclose(compiled(x), ref, atol=1e-4)
