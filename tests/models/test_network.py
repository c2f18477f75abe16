"""Model construction, variant facts from the paper, and the forward API."""

import pytest
import torch
from torch import nn

import fastvit
from fastvit.models.counting import count_gmacs, count_params
from fastvit.models.layers import AttentionBlock, DropPath, LayerScale2d, RepMixerBlock

ALL = fastvit.list_models()

# The paper's variant table: params train-time / reparameterized (M), GMACs at 256.
PUBLISHED = {
    "fastvit_t8": (4.03, 4.00, 0.69),
    "fastvit_t12": (7.55, None, 1.39),
    "fastvit_s12": (9.47, None, 1.79),
    "fastvit_sa12": (11.58, 11.55, 1.94),
    "fastvit_sa24": (21.55, None, 3.76),
    "fastvit_sa36": (31.53, None, 5.59),
    "fastvit_ma36": (44.07, 43.99, 7.82),
}


def within_paper(ours: float, paper: float) -> bool:
    """0.5% of the paper's value, widened by half a unit of its last printed digit
    (the table rounds to 2 decimals: 0.685 prints as 0.69)."""
    return abs(ours - paper) <= 0.005 * paper + 0.005


def test_list_models():
    """The paper's variants are rows of the table, smallest first."""
    assert [name for name in ALL if name in PUBLISHED] == list(PUBLISHED)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        fastvit.create_model("fastvit_xl")
    for name in ALL:
        assert name in str(err.value)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_and_gmacs_match_paper(name):
    train_p, fused_p, gmacs = PUBLISHED[name]
    model = fastvit.create_model(name)
    assert within_paper(count_params(model) / 1e6, train_p)
    fused = fastvit.reparameterize(model)
    if fused_p is not None:
        assert within_paper(count_params(fused) / 1e6, fused_p)
    assert within_paper(count_gmacs(fused, 256), gmacs)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_layer_scale_and_crop_follow_the_official_release(name):
    big = name in ("fastvit_sa36", "fastvit_ma36")
    spec = fastvit.VARIANTS[name]
    assert (spec.layer_scale_init, spec.crop_pct) == ((1e-6, 0.95) if big else (1e-5, 0.9))


def test_gmacs_counts_attention():
    # SA12's two attention blocks at 8x8 tokens, dim 512: 2 matmuls of 64*64*512 MACs each.
    sa12 = fastvit.reparameterize(fastvit.create_model("fastvit_sa12"))
    s12 = fastvit.reparameterize(fastvit.create_model("fastvit_s12"))
    assert count_gmacs(sa12) > count_gmacs(s12)
    assert count_gmacs(sa12, 256) - count_gmacs(sa12, 224) > 0


@pytest.mark.parametrize("name", ALL)
def test_structure_and_layer_scale_init(name):
    spec = fastvit.VARIANTS[name]
    model = fastvit.create_model(name)
    blocks = [m for m in model.modules() if isinstance(m, RepMixerBlock | AttentionBlock)]
    assert len(blocks) == sum(spec.depths)
    n_attn = sum(isinstance(b, AttentionBlock) for b in blocks)
    assert n_attn == (spec.depths[3] if spec.stage4_attention else 0)
    for m in model.modules():
        if isinstance(m, LayerScale2d):
            assert torch.all(m.gamma == spec.layer_scale_init)
    assert model.default_cfg["crop_pct"] == spec.crop_pct
    assert model.default_cfg["input_size"] == (3, 256, 256)
    assert model.default_cfg["interpolation"] == "bicubic"


def test_drop_path_grows_linearly():
    model = fastvit.create_model("fastvit_sa12", drop_path_rate=0.1)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    blocks = sum(fastvit.VARIANTS["fastvit_sa12"].depths)
    # RepMixer blocks own one DropPath, attention blocks one shared by both residuals.
    assert len(rates) == blocks
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    steps = [b - a for a, b in zip(rates, rates[1:], strict=False)]
    assert all(s == pytest.approx(0.1 / (blocks - 1)) for s in steps)


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
@pytest.mark.parametrize("size", [224, 256, 384])
def test_forward_intermediates_shapes(name, size):
    model = fastvit.create_model(name).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
        final, feats2 = model.forward_intermediates(x)  # timm's default: (final, maps)
    widths = fastvit.VARIANTS[name].widths
    assert [tuple(f.shape) for f in feats] == [
        (1, w, size // s, size // s) for w, s in zip(widths, (4, 8, 16, 32), strict=True)]
    assert final.shape == (1, 2 * widths[-1], size // 32, size // 32)
    assert all(torch.equal(a, b) for a, b in zip(feats, feats2, strict=True))


def test_fourth_map_is_after_stage4_blocks():
    """The official release takes it before the attention blocks; we must not."""
    model = fastvit.create_model("fastvit_sa12").eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        last = model.forward_intermediates(x, intermediates_only=True)[-1]
        y = model.stem(x)
        for stage in model.stages[:3]:
            y = stage(y)
        s4 = model.stages[3]
        before_blocks = s4.pos_emb(s4.downsample(y))
        after_blocks = s4.blocks(before_blocks)
        logits = model.forward_head(model.final_conv(last))
    assert torch.equal(last, after_blocks)
    assert not torch.allclose(last, before_blocks)
    assert torch.allclose(logits, model(x), atol=1e-6)


def test_features_only_mode_and_bad_sizes():
    model = fastvit.create_model("fastvit_t8", features_only=True).eval()
    assert model.head is None and model.final_conv is None
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 96, 160))
    assert [f.shape[-2:] for f in feats] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in model.feature_info]
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 100, 96))
    with pytest.raises(RuntimeError, match="features_only"):
        model.forward_head(torch.randn(1, 768, 2, 2))


def test_head_api():
    model = fastvit.create_model("fastvit_t8", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 768, 2, 2)
        assert model.forward_head(feats, pre_logits=True).shape == (2, 768)
        assert model(x).shape == (2, 10)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.default_cfg["num_classes"] == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, 768)


def test_gradients_flow_in_train_mode():
    model = fastvit.create_model("fastvit_sa12", num_classes=5).train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_grad_checkpointing_same_gradients():
    torch.manual_seed(0)
    a = fastvit.create_model("fastvit_t8", num_classes=4).eval()
    b = fastvit.create_model("fastvit_t8", num_classes=4).eval()
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing()
    a.train()
    b.train()
    x = torch.randn(2, 3, 64, 64)
    a(x).sum().backward()
    b(x).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5, rtol=1e-4), n


def _block_runs_and_saved_bytes(model: nn.Module, x: torch.Tensor, runs: list[int]
                                ) -> tuple[int, int, int]:
    """Block forwards in the forward pass, block forwards in backward, bytes autograd saved."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    runs[0] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(x).sum()
    in_forward = runs[0]
    loss.backward()
    return in_forward, runs[0] - in_forward, saved


def test_grad_checkpointing_recomputes_blocks_and_saves_less(monkeypatch):
    """Checkpointing trades compute for memory: every block runs again in backward, and
    autograd keeps far fewer activations (equal gradients alone cannot tell it is on)."""
    runs = [0]
    forward = RepMixerBlock.forward

    def counted(self: RepMixerBlock, x: torch.Tensor) -> torch.Tensor:
        runs[0] += 1
        return forward(self, x)

    monkeypatch.setattr(RepMixerBlock, "forward", counted)  # fastvit_t8: RepMixer blocks only
    torch.manual_seed(0)
    model = fastvit.create_model("fastvit_t8", num_classes=4).train()
    x = torch.randn(2, 3, 64, 64)
    blocks = sum(len(stage.blocks) for stage in model.stages)
    *plain_runs, plain_bytes = _block_runs_and_saved_bytes(model, x, runs)
    assert plain_runs == [blocks, 0]
    model.set_grad_checkpointing()
    *checkpointed_runs, checkpointed_bytes = _block_runs_and_saved_bytes(model, x, runs)
    assert checkpointed_runs == [blocks, blocks]
    assert checkpointed_bytes < plain_bytes / 2, (checkpointed_bytes, plain_bytes)
    model.set_grad_checkpointing(False)
    assert _block_runs_and_saved_bytes(model, x, runs)[1] == 0


def test_corrected_large_kernel_activation_switch():
    a = fastvit.create_model("fastvit_t8").eval()
    b = fastvit.create_model("fastvit_t8", lkc_act=True).eval()
    b.load_state_dict(a.state_dict())
    lk = b.stages[1].downsample.proj[0]
    assert isinstance(lk.act, nn.GELU)
    assert isinstance(a.stages[1].downsample.proj[0].act, nn.Identity)  # official default
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        fused = fastvit.reparameterize(b)
        assert fastvit.max_abs_difference(b, fused, x, relative=True) < 1e-5
