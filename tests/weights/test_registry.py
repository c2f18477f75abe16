"""The registry of official weights: tags, sources and published accuracies."""

import pytest

import fastvit
from fastvit.errors import ConfigError
from fastvit.weights import OFFICIAL_URL_BASE, TAGS, list_weights, official_weights

BASE = "https://docs-assets.developer.apple.com/ml-research/models/fastvit"


def test_every_variant_has_four_tags_with_the_release_urls():
    rows = list_weights()
    assert len(rows) == 7 * 4 and OFFICIAL_URL_BASE == BASE
    t8 = {w.tag: w for w in rows if w.variant == "fastvit_t8"}
    assert set(t8) == set(TAGS)
    assert t8["in1k"].url() == f"{BASE}/image_classification_models/fastvit_t8.pth.tar"
    assert t8["dist_in1k_reparam"].url() == (
        f"{BASE}/image_classification_distilled_models/fastvit_t8_reparam.pth.tar")
    assert t8["in1k"].hf_hub_id == "timm/fastvit_t8.apple_in1k"
    assert t8["dist_in1k"].hf_hub_id == "timm/fastvit_t8.apple_dist_in1k"
    assert t8["in1k_reparam"].hf_hub_id is None and t8["in1k_reparam"].fused


def test_top1_is_the_papers():
    assert official_weights("fastvit_t8", "in1k").top1 == 76.2
    assert official_weights("fastvit_ma36", "dist_in1k_reparam").top1 == 84.6
    for w in list_weights():
        published = fastvit.VARIANTS[w.variant].published
        assert w.top1 == published["top1_distilled" if w.distilled else "top1"]


def test_hub_ids_are_timms_pretrained_names():
    timm = pytest.importorskip("timm")
    names = set(timm.list_pretrained("fastvit_*"))
    for w in list_weights():
        if w.hf_hub_id:
            assert w.hf_hub_id.removeprefix("timm/") in names


def test_aliases_and_url_base_override(monkeypatch):
    assert official_weights("fastvit_t8", True).tag == "in1k"
    assert official_weights("fastvit_t8", "apple_dist_in1k").tag == "dist_in1k"
    monkeypatch.setenv("FASTVIT_WEIGHTS_URL", "http://mirror/fastvit/")
    assert official_weights("fastvit_s12", "in1k").url() == (
        "http://mirror/fastvit/image_classification_models/fastvit_s12.pth.tar")


@pytest.mark.parametrize("variant,tag,message", [
    ("fastvit_t8", "imagenet21k", "unknown weights tag 'imagenet21k'; choose one of: in1k"),
    ("fastvit_xl", "in1k", "unknown FastViT variant 'fastvit_xl'"),
    (None, "in1k", "the weights tag 'in1k' needs a variant: pass --model NAME"),
])
def test_bad_input_is_one_clear_error(variant, tag, message):
    with pytest.raises(ConfigError, match=message):
        official_weights(variant, tag)
