"""What timm-based code reads from our models equals what it reads from timm's: the
preprocessing (pretrained_cfg), the feature maps' description, the intermediates."""

import pytest
import torch

import fastvit

timm = pytest.importorskip("timm")
X = torch.randn(2, 3, 96, 128)


def twin(name: str, **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, timm's) with the same random weights and statistics, in eval mode."""
    ours = fastvit.randomize_model_stats(fastvit.create_model(name, **kwargs), 3).eval()
    theirs = timm.create_model(name, pretrained=False, **kwargs).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12", "fastvit_ma36"])
def test_resolve_data_config_gives_the_papers_preprocessing(name):
    ours = timm.data.resolve_data_config({}, model=fastvit.create_model(name))
    theirs = timm.data.resolve_data_config({}, model=timm.create_model(name))
    assert ours == theirs
    assert ours["input_size"] == (3, 256, 256) and ours["interpolation"] == "bicubic"
    assert ours["crop_pct"] == (0.95 if name == "fastvit_ma36" else 0.9)
    assert ours["mean"] == (0.485, 0.456, 0.406) and ours["std"] == (0.229, 0.224, 0.225)
    model = fastvit.create_model(name)
    assert model.default_cfg is model.pretrained_cfg  # timm's older name, kept as an alias


def test_sa36_crop_follows_the_official_release():
    """apple/ml-fastvit evaluates SA36 with crop 0.95 (its "fastvit_m" cfg); timm uses 0.9."""
    cfg = timm.data.resolve_data_config({}, model=fastvit.create_model("fastvit_sa36"))
    assert cfg["crop_pct"] == 0.95


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 3), (2,)])
def test_features_only_matches_timm(out_indices):
    ours_full, theirs_full = twin("fastvit_t8")
    ours = fastvit.load_checkpoint(
        fastvit.create_model("fastvit_t8", features_only=True, out_indices=out_indices),
        ours_full.state_dict()).eval()  # the classifier's tensors are skipped
    theirs = timm.create_model("fastvit_t8", features_only=True, out_indices=out_indices)
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    assert ours.feature_info.module_name() == theirs.feature_info.module_name()
    with torch.no_grad():
        got = ours(X)
        want = theirs_full.forward_intermediates(X, out_indices, intermediates_only=True)
    assert len(got) == len(want) == len(out_indices)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("kwargs", [
    {}, {"indices": 2}, {"indices": [0, 2], "stop_early": True},
    {"indices": [1], "intermediates_only": True}, {"indices": [3], "stop_early": True},
])
@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_forward_intermediates_equal_timms(name, kwargs):
    ours, theirs = twin(name)
    with torch.no_grad():
        got = ours.forward_intermediates(X, **kwargs)
        want = theirs.forward_intermediates(X, **kwargs)
    if kwargs.get("intermediates_only"):
        got, want = (None, got), (None, want)
    else:
        assert torch.allclose(got[0], want[0], atol=1e-5)  # the final features
    assert len(got[1]) == len(want[1])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got[1], want[1], strict=True))


def test_get_classifier_and_reset_like_timm():
    ours, theirs = twin("fastvit_t8")
    assert type(ours.get_classifier()) is type(theirs.get_classifier())
    assert ours.get_classifier().weight.shape == theirs.get_classifier().weight.shape
    assert torch.equal(ours.get_classifier().weight, theirs.get_classifier().weight)
    ours.reset_classifier(7)
    theirs.reset_classifier(7)
    assert ours.get_classifier().out_features == theirs.get_classifier().out_features == 7
