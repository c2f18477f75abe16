"""From what a user wrote to a model: tags through the caches, the Hub and the official
URL; Hub repositories; folders; and one clear error for each kind of bad input."""

import json
import sys

import pytest
import torch

import fastvit
from fastvit.errors import CheckpointError, ConfigError
from fastvit.weights import WeightsError, WeightsNotCached, resolve, resolve_weights
from tests.helpers.weights import (
    GOLDFISH,
    populate_hf_cache,
    serve_folder,
    weights_model,
    write_official,
)

X = torch.randn(2, 3, 64, 64)
T8_URL_PATH = "image_classification_models/fastvit_t8.pth.tar"


def same_logits(a, b) -> bool:
    with torch.no_grad():
        return torch.allclose(a.eval()(X), b.eval()(X), atol=1e-4, rtol=1e-4)


@pytest.fixture
def release(tmp_path):
    """A local copy of the release's folder layout holding a t8 (train-time, official keys)."""
    model = weights_model("fastvit_t8")
    write_official(tmp_path / "www", model, T8_URL_PATH)
    return tmp_path / "www", model


@pytest.fixture
def no_hub(monkeypatch):
    monkeypatch.setattr(resolve, "hub_available", lambda: False)


def test_tag_from_the_official_url_then_from_the_cache(release, no_hub, monkeypatch,
                                                       isolated_caches):
    root, reference = release
    with serve_folder(root) as base:
        monkeypatch.setenv("FASTVIT_WEIGHTS_URL", base)
        model = fastvit.create_model("fastvit_t8", pretrained=True)
    assert same_logits(model, reference) and not fastvit.is_fused(model)
    assert (isolated_caches / "official" / T8_URL_PATH).is_file()
    cfg = model.pretrained_cfg
    assert cfg["tag"] == "in1k" and cfg["hf_hub_id"] == "timm/fastvit_t8.apple_in1k"
    assert cfg["input_size"] == (3, 256, 256) and cfg["crop_pct"] == 0.9
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # server gone, offline: the cache answers
    loaded = fastvit.load_model("fastvit_t8", checkpoint="in1k")
    assert loaded.labels[GOLDFISH] == "goldfish" and loaded.cfg["tag"] == "in1k"
    assert loaded.class_names is None  # so ImageNet's wnid folders map onto the classes
    assert loaded.source.startswith("fastvit_t8.in1k (") and fastvit.is_fused(loaded.model)


def test_hub_failure_falls_back_to_the_official_url(release, monkeypatch):
    root, reference = release
    calls = []

    def unreachable(repo, filename, **kwargs):
        calls.append((repo, filename))
        raise WeightsError(f"cannot reach the Hub for {repo}")
    monkeypatch.setattr(resolve, "hub_download", unreachable)
    with serve_folder(root) as base:
        monkeypatch.setenv("FASTVIT_WEIGHTS_URL", base)
        resolved = resolve_weights("in1k", "fastvit_t8", progress=False)
    assert calls == [("timm/fastvit_t8.apple_in1k", "model.safetensors")]
    assert resolved.source.endswith(f"{T8_URL_PATH})")


def test_both_sources_failing_names_both(monkeypatch):
    def unreachable(repo, filename, **kwargs):
        raise WeightsError("hub down")
    monkeypatch.setattr(resolve, "hub_download", unreachable)
    monkeypatch.setenv("FASTVIT_WEIGHTS_URL", "http://127.0.0.1:9")
    with pytest.raises(WeightsError, match="hub down; and cannot download http://127.0.0.1:9/"):
        resolve_weights("dist_in1k", "fastvit_t8", progress=False)


def test_official_weights_from_a_prepared_hub_cache_offline(tmp_path, isolated_caches,
                                                            monkeypatch, no_connections):
    """timm's copy in the Hugging Face cache (as huggingface_hub lays it out)."""
    reference = weights_model("fastvit_t8", seed=3)
    fastvit.save_checkpoint(reference, tmp_path / "m.safetensors")
    populate_hf_cache(isolated_caches / "hub", "timm/fastvit_t8.apple_dist_in1k",
                      {"model.safetensors": tmp_path / "m.safetensors"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = fastvit.create_model("fastvit_t8", pretrained="dist_in1k")
    assert same_logits(model, reference)
    assert model.pretrained_cfg["tag"] == "dist_in1k"
    with pytest.raises(WeightsNotCached) as err:  # another tag: not cached
        fastvit.create_model("fastvit_t8", pretrained="in1k")
    for part in ("HF_HUB_OFFLINE=1", "fastvit_t8.in1k", "hf-hub:timm/fastvit_t8.apple_in1k",
                 str(isolated_caches / "official" / T8_URL_PATH),
                 "fastvit weights download fastvit_t8 --tag in1k"):
        assert part in str(err.value)
    assert no_connections == []


def _hub_repo(tmp_path, cache, repo_id, variant="fastvit_t8", config=True, seed=5):
    model = weights_model(variant, seed=seed)
    folder = fastvit.save_pretrained(model, tmp_path / repo_id.replace("/", "_"))
    files = {"model.safetensors": folder / "model.safetensors"}
    if config:
        files["config.json"] = folder / "config.json"
    populate_hf_cache(cache / "hub", repo_id, files)
    return model


def test_hub_repository_offline(tmp_path, isolated_caches, monkeypatch, no_connections):
    reference = _hub_repo(tmp_path, isolated_caches, "me/t8-flowers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = fastvit.create_model("hf-hub:me/t8-flowers")
    assert same_logits(model, reference) and model.variant == "fastvit_t8"
    assert model.pretrained_cfg["hf_hub_id"] == "me/t8-flowers"
    loaded = fastvit.load_model(checkpoint="hf-hub:me/t8-flowers", fused=False)
    assert same_logits(loaded.model, reference) and loaded.source == "hf-hub:me/t8-flowers"
    assert no_connections == []


def test_hub_repository_missing_file_offline(tmp_path, isolated_caches, monkeypatch,
                                             no_connections):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotCached) as err:
        fastvit.create_model("hf-hub:me/not-cached")
    assert "hf-hub:me/not-cached is not in the Hugging Face cache" in str(err.value)
    assert "fastvit weights download hf-hub:me/not-cached" in str(err.value)
    assert str(isolated_caches / "hub") in str(err.value)
    populate_hf_cache(isolated_caches / "hub", "me/config-only", {"config.json": b"{}"})
    with pytest.raises(WeightsError, match="hf-hub:me/config-only has none of the weight "
                       "files model.safetensors"):
        fastvit.create_model("hf-hub:me/config-only")
    assert no_connections == []


def test_hub_repository_of_another_variant(tmp_path, isolated_caches, monkeypatch):
    _hub_repo(tmp_path, isolated_caches, "me/sa12", variant="fastvit_sa12")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="hf-hub:me/sa12 holds fastvit_sa12 weights, not "
                       "fastvit_t8: use --model fastvit_sa12"):
        fastvit.load_model("fastvit_t8", checkpoint="hf-hub:me/sa12")


def test_hub_repository_of_another_architecture(tmp_path, isolated_caches, monkeypatch):
    config = json.dumps({"architecture": "resnet50", "num_classes": 1000}).encode()
    populate_hf_cache(isolated_caches / "hub", "timm/resnet50.a1_in1k",
                      {"config.json": config, "model.safetensors": b"not read"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="holds a resnet50, not a FastViT"):
        fastvit.create_model("hf-hub:timm/resnet50.a1_in1k")


def test_hub_without_huggingface_hub_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(WeightsError) as err:
        fastvit.create_model("hf-hub:me/anything")
    assert "pip install 'fastvit[hub]'" in str(err.value) and "\n" not in str(err.value)


def test_fine_tuning_head_and_features_only(release, no_hub, monkeypatch):
    root, reference = release
    with serve_folder(root) as base:
        monkeypatch.setenv("FASTVIT_WEIGHTS_URL", base)
        model = fastvit.create_model("fastvit_t8", pretrained="in1k", num_classes=10)
    assert model.num_classes == 10 and model.pretrained_cfg["num_classes"] == 10
    sd, ref = model.state_dict(), reference.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in sd if not k.startswith("head."))
    backbone = fastvit.create_model("fastvit_t8", pretrained="in1k", features_only=True)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(X)[-1],
                           reference.forward_intermediates(X, intermediates_only=True)[-1])


def test_torch_hub_factories_take_pretrained(tmp_path):
    reference = weights_model("fastvit_t8")
    path = fastvit.save_checkpoint(reference, tmp_path / "t8.safetensors")
    assert same_logits(fastvit.fastvit_t8(pretrained=str(path)), reference)
    assert not same_logits(fastvit.fastvit_t8(), reference)


@pytest.mark.parametrize("spec,variant,error,message", [
    ("in1k", None, ConfigError, "the weights tag 'in1k' needs a variant"),
    ("in22k", "fastvit_t8", CheckpointError, "checkpoint not found: in22k .not a weights tag"),
    ("in1k", "fastvit_xl", ConfigError, "unknown FastViT variant 'fastvit_xl'"),
    ("hf-hub:justaname", None, ConfigError, "not a Hub repository id: hf-hub:justaname"),
])
def test_bad_specs(spec, variant, error, message):
    with pytest.raises(error, match=message):
        fastvit.load_model(variant, checkpoint=spec)


def test_a_folder_of_another_variant_is_refused(tmp_path):
    folder = fastvit.save_pretrained(weights_model("fastvit_s12"), tmp_path / "s12")
    with pytest.raises(CheckpointError, match="holds fastvit_s12 weights, not fastvit_t8"):
        fastvit.create_model("fastvit_t8", pretrained=folder)


def test_a_folders_preprocessing_and_labels_come_along(tmp_path):
    """A model fine-tuned at 384 px publishes that size; evaluation must use it."""
    model = weights_model("fastvit_t8", top_class=None)
    model.reset_classifier(2)
    folder = fastvit.save_pretrained(model, tmp_path / "ft384", class_names=["cat", "dog"])
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["pretrained_cfg"].update(input_size=[3, 384, 384], crop_pct=1.0)
    config_path.write_text(json.dumps(config))
    loaded = fastvit.load_model(checkpoint=folder)
    assert loaded.image_size == 384 and loaded.cfg["crop_pct"] == 1.0
    assert loaded.cfg["input_size"] == (3, 384, 384) and loaded.labels == ["cat", "dog"]
    assert loaded.model.pretrained_cfg["file"] == str(folder)


def test_a_known_hash_that_does_not_match_keeps_nothing(release, no_hub, monkeypatch,
                                                        isolated_caches):
    from fastvit.weights import registry

    root, _ = release
    monkeypatch.setitem(registry.KNOWN_SHA256, T8_URL_PATH, "0" * 64)
    with serve_folder(root) as base:
        monkeypatch.setenv("FASTVIT_WEIGHTS_URL", base)
        with pytest.raises(WeightsError, match="sha256 mismatch for http://127.0.0.1:.*"
                           "fastvit_t8.pth.tar: expected 0000"):
            fastvit.create_model("fastvit_t8", pretrained="in1k")
    assert not (isolated_caches / "official" / T8_URL_PATH).exists()
