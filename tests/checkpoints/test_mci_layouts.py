"""The MCi towers as users hold them: timm files, open_clip whole models, Apple's
ml-mobileclip release, and FastVLM (transformers and ml-fastvlm), train-time and fused.

The files are synthetic: our own model's state dict renamed into each layout, with a
few stand-in tensors for the text tower / language model around it.
"""

from __future__ import annotations

import functools

import pytest
import torch

import fastvit
from fastvit.checkpoints import detect_layout, to_official_layout
from fastvit.errors import CheckpointError
from tests.helpers.checkpoints import random_model, relative_difference

NAME = "fastvit_mci0"
STANDIN = torch.zeros(2, 2)
OPEN_CLIP_TEXT = {"text.token_embedding.weight": STANDIN, "logit_scale": torch.tensor(4.6)}
MOBILECLIP_TEXT = {"text_encoder.embedding_layer.weight": STANDIN,
                   "logit_scale": torch.tensor(4.6)}
LANGUAGE_MODEL = {"model.language_model.embed_tokens.weight": STANDIN,
                  "model.multi_modal_projector.linear_1.weight": STANDIN,
                  "lm_head.weight": STANDIN}
LLAVA_MODEL = {"model.embed_tokens.weight": STANDIN, "model.mm_projector.0.weight": STANDIN,
               "lm_head.weight": STANDIN}
LAYOUTS = ("timm", "open_clip", "open_clip_ddp", "ml-mobileclip", "transformers_fastvlm",
           "ml-fastvlm")
HEADLESS = ("transformers_fastvlm",)  # the VLM takes final_conv's map: no classifier stored


def prefixed(prefix: str, sd: dict) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def in_layout(layout: str, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``ours`` (timm's key layout) as the named whole-model file holds it."""
    if layout == "timm":
        return dict(ours)
    if layout == "open_clip":
        return {**prefixed("visual.trunk.", ours), **OPEN_CLIP_TEXT}
    if layout == "open_clip_ddp":
        return prefixed("module.", in_layout("open_clip", ours))
    official = to_official_layout(ours, clip_projection=True)
    if layout == "ml-mobileclip":
        return {**prefixed("image_encoder.model.", official), **MOBILECLIP_TEXT}
    if layout == "ml-fastvlm":
        return {**prefixed("model.vision_tower.vision_tower.model.", official), **LLAVA_MODEL}
    headless = {k: v for k, v in ours.items() if not k.startswith("head.")}
    return {**prefixed("model.vision_tower.timm_model.", headless), **LANGUAGE_MODEL}


@functools.cache
def source(fused: bool) -> fastvit.FastVit:
    model = random_model(NAME, seed=5)
    with torch.no_grad():  # a CLIP projection has no bias: keep ours at zero too
        model.head.fc.bias.zero_()
    return fastvit.reparameterize(model) if fused else model


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_create_model_takes_the_image_tower(tmp_path, layout, fused):
    model = source(fused)
    path = tmp_path / f"{layout}.pt"
    torch.save(in_layout(layout, model.state_dict()), path)
    kwargs = {"num_classes": 0} if layout in HEADLESS else {}
    loaded = fastvit.create_model(NAME, inference_mode=fused, checkpoint=path, **kwargs)
    assert fastvit.is_fused(loaded) == fused
    if layout in HEADLESS:
        with torch.no_grad():
            x = torch.randn(1, 3, 64, 64)
            assert torch.equal(loaded.eval().forward_features(x), model.forward_features(x))
    else:
        assert relative_difference(model, loaded) == 0.0
    if layout in ("open_clip_ddp", "ml-fastvlm"):  # no variant given: keys and shapes name it
        assert fastvit.load_model(checkpoint=path, fused=None, **kwargs).variant == NAME


def test_ml_mobileclip_layout_is_what_timm_reads():
    """timm's own converter of Apple's MobileCLIP files reads our ml-mobileclip rendering
    back into the same tensors (so the rendering, and our reading of it, are the release's)."""
    from timm.models.fastvit import checkpoint_filter_fn

    ours = source(False).state_dict()
    release = in_layout("ml-mobileclip", ours)
    with torch.device("meta"):
        timm_model = fastvit.create_model(NAME)  # the filter only asks for head.fc's type
    converted = checkpoint_filter_fn(release, timm_model)
    assert converted.keys() == ours.keys()
    assert all(torch.equal(converted[k], ours[k]) for k in ours)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", ["fastvit_mci0", "fastvit_mci3", "fastvit_sa12"])
def test_layout_and_variant_are_recognised(name, fused):
    """Weightless models: every layout of MCi3 (five stages, LayerNorm attention) and MCi0
    is told apart from the paper's variants, in both forms."""
    with torch.device("meta"):
        model = fastvit.create_model(name, inference_mode=fused)
    for layout in LAYOUTS:
        if name == "fastvit_sa12" and layout != "timm":
            continue
        found = detect_layout(in_layout(layout, model.state_dict()))
        assert (found.variant, found.exact, found.fused) == (name, True, fused), layout
        official = layout in ("ml-mobileclip", "ml-fastvlm")
        assert found.name == ("official" if official else "ours"), layout


def test_a_tower_of_another_variant_is_the_clear_error(tmp_path):
    path = tmp_path / "open_clip.pt"
    torch.save(in_layout("open_clip", source(False).state_dict()), path)
    with pytest.raises(CheckpointError, match="most likely belongs to fastvit_mci0"):
        fastvit.create_model("fastvit_sa12", checkpoint=path)
    with pytest.raises(CheckpointError, match="most likely belongs to fastvit_mci0"):
        fastvit.load_model("fastvit_mci2", checkpoint=path)
