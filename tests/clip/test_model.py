"""Our CLIP models against open_clip's: image embeddings, zero-shot probabilities, the
model table, and one clear error for each wrong file or source."""

from __future__ import annotations

import sys

import pytest
import torch

import fastvit
from fastvit.clip import (
    CLIP_MODELS,
    ZeroShotClassifier,
    check_template,
    load_clip,
    parse_labels,
    prompts,
    resolve_clip_weights,
)
from fastvit.errors import CheckpointError, ConfigError
from fastvit.extras import MissingExtraError
from fastvit.weights import WeightsNotCached
from tests.clip.conftest import open_clip, reference, save_whole_model

LABELS = ["cat", "dog", "red car", "tree"]
TOL = 1e-4


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def check_parity(name: str, path, size: int):
    """encode_image and zero-shot probabilities of ours (deploy form) vs open_clip's;
    returns our model."""
    ref = reference(name)
    ours = load_clip(name, checkpoint=path)
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.get_tokenizer(name)(prompts(LABELS))
    with torch.no_grad():
        want = ref.encode_image(images, normalize=True)
        assert relative(ours.encode_image(images), want) <= TOL
        assert relative(ours.encode_text(prompts(LABELS)), ref.encode_text(tokens, True)) <= TOL
        logits, _ = ref.get_logits(images, tokens)
        classifier = ZeroShotClassifier(ours, LABELS)
        assert relative(classifier(images), logits) <= TOL
        probs = classifier.probabilities(images)
        assert float((probs - logits.softmax(dim=-1)).abs().max()) <= TOL
    assert probs.max() > 0.3  # not uniform: the comparison has something to compare
    return ours


def test_mobileclip2_s0_matches_open_clip(s0_file):
    clip = check_parity("MobileCLIP2-S0", s0_file, 64)
    assert clip.tower == "fastvit_mci0" and clip.embed_dim == 512
    assert fastvit.is_fused(clip.image)
    assert clip.cfg["mean"] == (0.0, 0.0, 0.0) and clip.cfg["crop_pct"] == 0.95
    assert clip.cfg["input_size"] == (3, 64, 64)  # what the file records


@pytest.mark.slow
def test_mobileclip2_s3_matches_open_clip(tmp_path):
    """MCi3: five stages (final stride 64), LayerNorm before attention, 768-d embeddings."""
    path = save_whole_model(reference("MobileCLIP2-S3"), tmp_path / "s3.safetensors")
    check_parity("MobileCLIP2-S3", path, 64)


@pytest.mark.parametrize("name", sorted(CLIP_MODELS))
def test_table_matches_open_clip(name):
    """Each model's tower, tags and Hub repositories are open_clip 3.3's."""
    config = open_clip.get_model_config(name)
    assert config["vision_cfg"]["timm_model_name"] == CLIP_MODELS[name].tower
    assert config.get("custom_text")  # text.* keys, as the loader reads them
    for tag, repo in CLIP_MODELS[name].releases.items():
        assert open_clip.get_pretrained_cfg(name, tag)["hf_hub"].rstrip("/") == repo


def test_image_only_needs_no_text_tower(s0_file, tmp_path):
    ref = reference("MobileCLIP2-S0")
    tower = {f"visual.trunk.{k}": v.contiguous() for k, v in ref.visual.trunk.state_dict().items()}
    from safetensors.torch import save_file

    save_file(tower, str(tmp_path / "tower.safetensors"))
    clip = load_clip("MobileCLIP2-S0", checkpoint=tmp_path / "tower.safetensors", text=False)
    assert clip.text is None
    with pytest.raises(ConfigError, match="without its text tower"):
        clip.encode_text(["a cat"])
    with pytest.raises(CheckpointError, match=r"holds no text tower \(text\.\* keys\): give "
                       r"open_clip's whole MobileCLIP2-S0 model \(e\.g\. --pretrained dfndr2b\)"):
        load_clip("MobileCLIP2-S0", checkpoint=tmp_path / "tower.safetensors")


def test_a_file_of_another_tower_is_one_line(s0_file):
    with pytest.raises(CheckpointError) as err:
        load_clip("MobileCLIP2-S3", checkpoint=s0_file)
    assert str(err.value) == (f"{s0_file} holds the image tower of fastvit_mci0 "
                              f"(MobileCLIP2-S0), not the fastvit_mci3 of MobileCLIP2-S3: pass "
                              f"--model MobileCLIP2-S0")


def test_missing_extra_is_one_line(s0_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(MissingExtraError) as err:
        load_clip("MobileCLIP2-S0", checkpoint=s0_file)
    assert str(err.value) == ("the MobileCLIP text tower needs open_clip_torch: "
                              "pip install 'fastvit[clip]'")
    assert load_clip("MobileCLIP2-S0", checkpoint=s0_file, text=False).text is None


def test_weights_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("FASTVIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    for tag in ("dfndr2b", "apple_mclip2_dfndr2b"):
        with pytest.raises(WeightsNotCached) as err:
            resolve_clip_weights("MobileCLIP2-S0", pretrained=tag)
        assert "offline (HF_HUB_OFFLINE=1) and MobileCLIP2-S0's open_clip weights (dfndr2b: " \
               "hf-hub:timm/MobileCLIP2-S0-OpenCLIP, image and text towers) are not in" \
               in str(err.value)
        assert "\n" not in str(err.value) and "--checkpoint FILE" in str(err.value)
    with pytest.raises(ConfigError, match=r"open_clip publishes no MobileCLIP2-S0 weights "
                       r"under 'apple_mclip' \(its tags: dfndr2b\)"):
        resolve_clip_weights("MobileCLIP2-S0", pretrained="apple_mclip")
    with pytest.raises(ConfigError, match="unknown pretrained tag 'laion' for MobileCLIP-S1: "
                       "open_clip publishes datacompdr"):
        resolve_clip_weights("MobileCLIP-S1", pretrained="laion")
    with pytest.raises(ConfigError, match="--checkpoint FILE .* or --pretrained TAG, one of"):
        resolve_clip_weights("MobileCLIP2-S0", checkpoint="a", pretrained="dfndr2b")
    with pytest.raises(CheckpointError, match="checkpoint not found: "):
        resolve_clip_weights("MobileCLIP2-S0", checkpoint=tmp_path / "none.safetensors")
    with pytest.raises(ConfigError, match="unknown CLIP model 'ViT-B-32'"):
        resolve_clip_weights("ViT-B-32", pretrained="openai")


def test_labels_and_templates():
    assert parse_labels(" cat, dog ,,red car ") == ["cat", "dog", "red car"]
    for empty in ("", " , ,", []):
        with pytest.raises(ConfigError, match="no labels"):
            parse_labels(empty)
    with pytest.raises(ConfigError, match="label 'cat' is given more than once"):
        parse_labels("cat,dog,cat")
    assert prompts(["cat"], "{} in the wild, {{not a field}}") == [
        "cat in the wild, {not a field}"]
    for bad, why in (("a photo", "has no {} where the label goes"),
                     ("a {0} and a {1}", "is not a prompt with one {}"),
                     ("a {name}", "is not a prompt with one {}"),
                     ("a {", "is not a prompt with one {}")):
        with pytest.raises(ConfigError, match=why.replace("{}", r"\{\}")):
            check_template(bad)

