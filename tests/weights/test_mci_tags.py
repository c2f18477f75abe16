"""The MCi towers' CLIP weights by tag (timm's ``apple_mclip``, ``apple_mclip2_dfndr2b``),
from a prepared Hugging Face cache, offline, through the same resolver and caches as the
paper's ImageNet weights."""

import json

import pytest
import torch

import fastvit
from fastvit.cli import main
from fastvit.errors import ConfigError
from fastvit.weights import WeightsNotCached, list_weights, official_weights
from tests.helpers.checkpoints import random_model
from tests.helpers.weights import populate_hf_cache

EXPECTED = {  # timm's pretrained cfgs of fastvit_mci*: (hub id, crop_pct)
    ("fastvit_mci0", "apple_mclip"): ("apple/mobileclip_s0_timm", 0.95),
    ("fastvit_mci1", "apple_mclip"): ("apple/mobileclip_s1_timm", 0.95),
    ("fastvit_mci2", "apple_mclip"): ("apple/mobileclip_s2_timm", 0.95),
    ("fastvit_mci0", "apple_mclip2_dfndr2b"): ("timm/fastvit_mci0.apple_mclip2_dfndr2b", 1.0),
    ("fastvit_mci2", "apple_mclip2_dfndr2b"): ("timm/fastvit_mci2.apple_mclip2_dfndr2b", 0.95),
    ("fastvit_mci3", "apple_mclip2_dfndr2b"): ("timm/fastvit_mci3.apple_mclip2_dfndr2b", 0.95),
    ("fastvit_mci4", "apple_mclip2_dfndr2b"): ("timm/fastvit_mci4.apple_mclip2_dfndr2b", 0.95),
}


def test_the_registry_holds_timms_clip_tags():
    rows = list_weights(family="mobileclip")
    assert {(w.variant, w.tag): (w.hf_hub_id, w.clip.crop_pct) for w in rows} == EXPECTED
    assert len(list_weights()) == 7 * 4  # the default: the paper's ImageNet weights
    timm = pytest.importorskip("timm")
    for (variant, tag), (hub_id, crop) in EXPECTED.items():
        cfg = timm.models.get_pretrained_cfg(f"{variant}.{tag}")
        assert (cfg.hf_hub_id.rstrip("/") in (hub_id, "timm"), cfg.crop_pct) == (True, crop)
    s0 = official_weights("fastvit_mci0", "apple_mclip")
    assert s0.url().endswith("/mobileclip/mobileclip_s0.pt") and s0.top1 is None
    assert official_weights("fastvit_mci3", "apple_mclip2_dfndr2b").url() is None
    assert official_weights("fastvit_mci3", True).tag == "apple_mclip2_dfndr2b"
    assert official_weights("fastvit_mci0", True).tag == "apple_mclip"
    with pytest.raises(ConfigError, match="fastvit_mci1 has no 'apple_mclip2_dfndr2b' weights"):
        official_weights("fastvit_mci1", "apple_mclip2_dfndr2b")
    with pytest.raises(ConfigError, match="fastvit_t8 has no 'apple_mclip' weights"):
        official_weights("fastvit_t8", "apple_mclip")


def test_tag_from_a_prepared_hub_cache_offline(tmp_path, isolated_caches, monkeypatch,
                                               no_connections):
    reference = random_model("fastvit_mci0", seed=2)
    fastvit.save_checkpoint(reference, tmp_path / "m.safetensors")
    populate_hf_cache(isolated_caches / "hub", "timm/fastvit_mci0.apple_mclip2_dfndr2b",
                      {"model.safetensors": tmp_path / "m.safetensors"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = fastvit.create_model("fastvit_mci0", pretrained="apple_mclip2_dfndr2b").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    cfg = model.pretrained_cfg
    assert (cfg["tag"], cfg["crop_pct"], cfg["mean"], model.num_classes) == (
        "apple_mclip2_dfndr2b", 1.0, (0.0, 0.0, 0.0), 512)
    assert cfg["hf_hub_id"] == "timm/fastvit_mci0.apple_mclip2_dfndr2b"
    with pytest.raises(WeightsNotCached) as err:  # the default tag (MobileCLIP): not cached
        fastvit.create_model("fastvit_mci0", pretrained=True)
    for part in ("fastvit_mci0.apple_mclip", "hf-hub:apple/mobileclip_s0_timm",
                 "mobileclip/mobileclip_s0.pt", "--tag apple_mclip"):
        assert part in str(err.value)
    assert no_connections == []


def test_weights_list_shows_the_clip_tags(capsys):
    assert main(["weights", "list", "fastvit_mci0", "fastvit_mci3"]) == 0
    out = capsys.readouterr().out
    assert ("| fastvit_mci0.apple_mclip | train-time | CLIP | apple/mobileclip_s0_timm | no |"
            in out)
    assert "| fastvit_mci3.apple_mclip2_dfndr2b | train-time | CLIP |" in out
    assert main(["weights", "list", "--json", "-"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert len(names) == 7 * 4 + 7 and names[-1] == "fastvit_mci4.apple_mclip2_dfndr2b"
