"""The MobileCLIP / MobileCLIP2 image towers MCi0-4 against timm's ``fastvit_mci*``.

timm's models get random weights and randomized BatchNorm / LayerNorm statistics and
layer scales, and their state dicts load into ours unchanged (same key layout). Most
checks use one block per stage (every structural feature, a fraction of the cost);
one full-depth model per structurally distinct family (MCi0 for the four-stage towers
with squeeze-excite patch embeddings, MCi3 for the five-stage LayerNorm ones) is built
once per module.
"""

import dataclasses
import functools

import pytest
import torch

import fastvit
from fastvit.models import VARIANTS, FastVit, count_params, deploy_form
from fastvit.models.layers import LayerNorm2d, ReparamLargeKernelConv, SqueezeExcite

timm = pytest.importorskip("timm")
from timm.utils.model import reparameterize_model  # noqa: E402

MCI = fastvit.list_models("mobileclip")
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
TOL = 1e-5  # relative to the largest |output| of timm's eager model


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def timm_and_ours(name: str, shallow: bool, seed: int = 0) -> tuple[torch.nn.Module, FastVit]:
    """timm's model (random, statistics randomized) and ours holding its state dict."""
    spec = VARIANTS[name]
    depths = (1,) * spec.num_stages if shallow else spec.depths
    torch.manual_seed(seed)
    theirs = timm.create_model(name, layers=depths).eval()
    fastvit.randomize_model_stats(theirs, seed=seed)
    with torch.device("meta"):  # no init cost: every tensor comes from timm's state dict
        ours = FastVit(dataclasses.replace(spec, depths=depths), variant=name)
    ours = ours.to_empty(device="cpu").eval()
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def check_parity(theirs: torch.nn.Module, ours: FastVit) -> None:
    """Train-time and fused forward against timm's eager output; our fusion against timm's."""
    with torch.no_grad():
        want = theirs(X)
        assert relative(ours(X), want) <= TOL
        fused = fastvit.reparameterize(ours)
        assert relative(fused(X), want) <= TOL
        timm_fused = reparameterize_model(theirs)
        ref = timm_fused.state_dict()
        got = fused.state_dict()
        assert set(got) == set(ref)
        assert all(torch.allclose(got[k], ref[k], rtol=1e-5, atol=1e-6) for k in got)
        before = {k: v.clone() for k, v in got.items()}
        fused.reparameterize()  # idempotent
        assert all(torch.equal(v, before[k]) for k, v in fused.state_dict().items())
        assert relative(deploy_form(fused)(X), want) <= TOL  # what every export ships


@functools.cache
def meta_pair(name: str) -> tuple[FastVit, torch.nn.Module]:
    """(ours, timm's) full-size default models on the meta device: structure, no memory."""
    with torch.device("meta"):
        return fastvit.create_model(name), timm.create_model(name)


@pytest.mark.parametrize("name", MCI)
def test_rows_build_timms_architecture(name):
    """Same keys, shapes, parameter count and classifier size as timm's model (the fused
    form's keys are compared in the parity checks)."""
    ours, theirs = meta_pair(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()}
    assert count_params(ours) == count_params(theirs)
    assert ours.num_classes == theirs.num_classes == VARIANTS[name].num_classes


@pytest.mark.parametrize("name", MCI)
def test_one_block_per_stage_parity(name):
    check_parity(*timm_and_ours(name, shallow=True, seed=1))


@pytest.fixture(scope="module", params=[
    "fastvit_mci0",
    pytest.param("fastvit_mci3", marks=pytest.mark.slow),  # 7-12 s on one thread
])
def full_depth(request):
    return timm_and_ours(request.param, shallow=False, seed=2)


def test_full_depth_parity(full_depth):
    check_parity(*full_depth)


@pytest.mark.parametrize("name", MCI)
def test_structure_of_the_new_pieces(name):
    spec = VARIANTS[name]
    model = meta_pair(name)[0]
    five = spec.num_stages == 5
    assert len(model.stages) == spec.num_stages and not isinstance(model.stages[0].downsample,
                                                                   ReparamLargeKernelConv)
    assert (model.stem[0].conv_scale is None) == five  # MCi3/4: no 1x1 stem branch
    for i, stage in enumerate(model.stages):
        has_pe = not isinstance(stage.pos_emb, torch.nn.Identity)
        assert has_pe == (i in spec.attention_stages)
        if i:
            lk = stage.downsample.proj[0]
            assert isinstance(lk.se, SqueezeExcite) == (i in spec.se_downsample_stages)
            assert isinstance(lk.act, torch.nn.GELU)  # lkc_use_act
        norms = {type(b.norm) for b in stage.blocks if hasattr(b, "norm")}
        if i in spec.attention_stages:
            assert norms == {LayerNorm2d if five else torch.nn.BatchNorm2d}
    if five:
        assert model.stages[3].blocks[0].norm.eps == 1e-5


@pytest.mark.parametrize("name", MCI)
def test_preprocessing_is_timms(name):
    ours, theirs = meta_pair(name)
    assert timm.data.resolve_data_config({}, model=ours) == timm.data.resolve_data_config(
        {}, model=theirs)
    for key in ("pool_size", "first_conv", "num_classes"):
        assert ours.pretrained_cfg[key] == theirs.pretrained_cfg[key], key


def test_five_stage_features_and_intermediates():
    theirs, ours = timm_and_ours("fastvit_mci3", shallow=True, seed=3)
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        final, maps = ours.forward_intermediates(x)
        want_final, want = theirs.forward_intermediates(x)
        assert torch.allclose(final, want_final, atol=1e-5) and len(maps) == len(want) == 5
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(maps, want, strict=True))
        last2 = ours.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [m.shape[-2:] for m in last2] == [(4, 2), (2, 1)]
    with torch.device("meta"):
        spec = dataclasses.replace(VARIANTS["fastvit_mci3"], depths=(1,) * 5)
        backbone = FastVit(spec, features_only=True)
        timm_backbone = timm.create_model("fastvit_mci3", layers=(1,) * 5, features_only=True,
                                          out_indices=(0, 1, 2, 3, 4))
    assert backbone.feature_info.reduction() == [4, 8, 16, 32, 64]
    assert backbone.feature_info.reduction() == timm_backbone.feature_info.reduction()
    assert backbone.feature_info.channels() == timm_backbone.feature_info.channels()
    assert backbone.feature_info.module_name() == timm_backbone.feature_info.module_name()
    assert FastVit(spec, features_only=True, out_indices=(-1,)).out_indices == (4,)
    with pytest.raises(ValueError, match="multiples of 64 for 5-level features"):
        ours.forward_intermediates(torch.randn(1, 3, 96, 96))


def test_info_counts_match_timm(capsys):
    import json

    from fastvit.cli import main

    assert main(["info", "fastvit_mci0", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    theirs = meta_pair("fastvit_mci0")[1]
    assert row["params_train_m"] == pytest.approx(count_params(theirs) / 1e6)
    assert (row["num_stages"], row["family"], row["num_classes"]) == (4, "mobileclip", 512)
    assert row["mixers"] == ["RepMixer"] * 3 + ["Attention"] and row["published_top1"] is None
    assert row["params_fused_m"] < row["params_train_m"] and row["gmacs"] > 1.0
