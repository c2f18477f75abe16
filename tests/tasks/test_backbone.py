"""FastVitBackbone: feature pyramid shapes, frozen BatchNorm / stages, ImageNet weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastvit
from fastvit.checkpoints import save_checkpoint
from fastvit.checkpoints.layouts import to_official_layout
from fastvit.tasks.backbone import FastVitBackbone


def test_feature_strides_and_channels() -> None:
    backbone = FastVitBackbone("fastvit_t8").eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 96, 160))
    assert list(feats) == ["0", "1", "2", "3"]
    assert backbone.strides == [4, 8, 16, 32]
    assert backbone.channels == list(fastvit.VARIANTS["fastvit_t8"].widths)
    for f, stride, chs in zip(feats.values(), backbone.strides, backbone.channels, strict=True):
        assert f.shape == (2, chs, 96 // stride, 160 // stride)


def test_paper_resolution_512() -> None:
    """The setting the paper's dense-task latency uses (512x512) works end to end."""
    backbone = FastVitBackbone("fastvit_t8", out_indices=(1, 3)).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 512, 512))
    assert [tuple(f.shape) for f in feats.values()] == [(1, 96, 64, 64), (1, 384, 16, 16)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="out_indices"):
        FastVitBackbone("fastvit_t8", out_indices=(0, 4))
    with pytest.raises(ValueError, match="frozen_stages"):
        FastVitBackbone("fastvit_t8", frozen_stages=7)
    with pytest.raises(ValueError, match="multiples of 32"):
        FastVitBackbone("fastvit_t8")(torch.randn(1, 3, 100, 100))


def test_frozen_batchnorm_and_stages_survive_a_train_step() -> None:
    backbone = FastVitBackbone("fastvit_t8", frozen_stages=1, norm_eval=True)
    fastvit.randomize_model_stats(backbone.body, seed=1)
    backbone.train()
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    assert all(not p.requires_grad for bn in bns for p in bn.parameters())
    frozen = {n: p.clone() for n, p in backbone.named_parameters()
              if n.startswith(("body.stem.", "body.stages.0."))}
    stats = {n: b.clone() for n, b in backbone.named_buffers()}
    trainable = {n: p.clone() for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("body.stages.0.") for n in trainable)

    opt = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    loss = sum(f.square().mean() for f in backbone(torch.randn(2, 3, 64, 64)).values())
    loss.backward()
    opt.step()

    for name, buf in backbone.named_buffers():
        assert torch.equal(buf, stats[name]), f"BN statistic {name} changed"
    for name, p in backbone.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), f"frozen parameter {name} changed"
    changed = [n for n, p in backbone.named_parameters()
               if n in trainable and not torch.equal(p, trainable[n])]
    assert changed, "no trainable parameter moved"


def test_norm_eval_off_trains_batchnorm() -> None:
    backbone = FastVitBackbone("fastvit_t8", norm_eval=False).train()
    bn = next(m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert bn.training and bn.weight.requires_grad
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("layout", ["ours", "official"])
def test_loads_classification_checkpoint(tmp_path, layout: str) -> None:
    """ImageNet classifier weights (head included) load into the backbone; features
    equal the classifier's own intermediate maps."""
    classifier = fastvit.create_model("fastvit_t8", num_classes=10)
    fastvit.randomize_model_stats(classifier, seed=3)
    classifier.eval()
    if layout == "ours":
        path = tmp_path / "t8.safetensors"
        save_checkpoint(classifier, path)
    else:
        path = tmp_path / "t8.pth"
        torch.save({"state_dict": to_official_layout(classifier.state_dict())}, path)
    backbone = FastVitBackbone("fastvit_t8", checkpoint=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = classifier.forward_intermediates(x, intermediates_only=True)
        got = list(backbone(x).values())
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)
