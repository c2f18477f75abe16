"""save_pretrained folders load in timm and in fastvit with identical logits; push goes
through huggingface_hub (monkeypatched: no network)."""

import json
from pathlib import Path

import pytest
import torch

import fastvit
from fastvit.cli import main
from fastvit.errors import CheckpointError
from fastvit.publish import push_to_hub
from fastvit.weights import WeightsError
from tests.helpers.weights import populate_hf_cache, weights_model

timm = pytest.importorskip("timm")
X = torch.randn(2, 3, 64, 64)


def logits(model):
    with torch.no_grad():
        return model.eval()(X)


def test_folder_layout_config_and_card(tmp_path):
    model = weights_model("fastvit_t8", seed=1)
    names = [f"flower_{i}" for i in range(1000)]
    folder = fastvit.save_pretrained(model, tmp_path / "out", class_names=names,
                                     repo_id="me/t8", dataset="flowers",
                                     metrics={"top1": 91.25})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                          "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "fastvit_t8" and config["num_classes"] == 1000
    assert config["num_features"] == 768 and config["label_names"] == names
    assert "model_args" not in config  # timm's default build
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 256, 256] and cfg["crop_pct"] == 0.9
    assert cfg["interpolation"] == "bicubic" and "file" not in cfg and "tag" not in cfg
    card = (folder / "README.md").read_text()
    for part in ("library_name: timm", "# fastvit_t8 (me/t8)", "| data | flowers |",
                 "| top1 | 91.25 |", 'timm.create_model("hf-hub:me/t8", pretrained=True)',
                 'fastvit.create_model("hf-hub:me/t8")', "| form | train-time"):
        assert part in card


def test_timm_and_fastvit_load_the_folder_with_identical_logits(tmp_path):
    model = weights_model("fastvit_t8", seed=2)
    expected = logits(model)
    folder = fastvit.save_pretrained(model, tmp_path / "out")
    ours = fastvit.create_model("fastvit_t8", pretrained=folder)
    assert torch.equal(logits(ours), expected) and not fastvit.is_fused(ours)
    local = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert torch.allclose(logits(local), expected, atol=1e-5)
    overlay = timm.create_model("fastvit_t8", pretrained=True,
                                pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert torch.allclose(logits(overlay), expected, atol=1e-5)
    deployed = fastvit.load_model(checkpoint=folder)  # the deploy form of the same weights
    assert torch.allclose(logits(deployed.model), expected, atol=1e-4, rtol=1e-4)


def test_timm_hf_hub_name_loads_a_pushed_folder_from_the_cache(tmp_path, monkeypatch):
    """The same files as the Hub would serve them, through timm's hf-hub: path, offline."""
    from huggingface_hub import constants

    model = weights_model("fastvit_t8", seed=4)
    folder = fastvit.save_pretrained(model, tmp_path / "out")
    cache = tmp_path / "hfcache"
    populate_hf_cache(cache, "me/t8", {n: folder / n for n in
                                       ("config.json", "model.safetensors", "README.md")})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("FASTVIT_CACHE")
    via_timm = timm.create_model("hf-hub:me/t8", pretrained=True)
    via_fastvit = fastvit.create_model("hf-hub:me/t8")
    assert torch.allclose(logits(via_timm), logits(model), atol=1e-5)
    assert torch.equal(logits(via_fastvit), logits(model))
    data = timm.data.resolve_data_config({}, model=via_timm)
    assert tuple(data["input_size"]) == (3, 256, 256) and data["crop_pct"] == 0.9


def test_loaded_models_keep_their_class_names(tmp_path):
    model = weights_model("fastvit_t8", top_class=None)
    model.reset_classifier(3)
    path = fastvit.save_checkpoint(model, tmp_path / "c.safetensors",
                                   class_names=["cat", "dog", "fox"])
    loaded = fastvit.load_model(checkpoint=path, fused=None, fold_bn=False)
    folder = fastvit.save_pretrained(loaded, tmp_path / "out")
    assert json.loads((folder / "config.json").read_text())["label_names"] == [
        "cat", "dog", "fox"]
    assert fastvit.load_model(checkpoint=folder).class_names == ["cat", "dog", "fox"]


def test_fused_models_and_backbones_are_refused(tmp_path):
    deploy = fastvit.load_model("fastvit_t8").model  # fused and BN-folded
    with pytest.raises(CheckpointError, match="reparameterized .fused.: timm's create_model"):
        fastvit.save_pretrained(deploy, tmp_path / "a")
    fused = fastvit.reparameterize(fastvit.create_model("fastvit_t8"))
    with pytest.raises(CheckpointError, match="Publish the train-time weights"):
        fastvit.save_pretrained(fused, tmp_path / "a")
    backbone = fastvit.create_model("fastvit_t8", features_only=True)
    with pytest.raises(CheckpointError, match="features_only backbone has no classifier"):
        fastvit.save_pretrained(backbone, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records what would be uploaded."""

    calls: list = []
    logged_in = True

    def __init__(self, token=None):
        self.token = token

    def whoami(self):
        if not self.logged_in:
            raise OSError("Invalid user token.")
        return {"name": "me"}

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, commit_message):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        config = json.loads((Path(folder_path) / "config.json").read_text())
        self.calls.append(("upload_folder", repo_id, files, config["architecture"],
                           commit_message))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls, FakeApi.logged_in = [], True
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_push_a_checkpoint(tmp_path, fake_hub, capsys):
    path = fastvit.save_checkpoint(weights_model("fastvit_t8"), tmp_path / "t8.safetensors")
    assert main(["push", str(path), "--repo", "me/t8", "--private",
                 "--metric", "top1=76.2"]) == 0
    assert fake_hub.calls == [
        ("create_repo", "me/t8", True, True),
        ("upload_folder", "me/t8", ["README.md", "config.json", "model.safetensors"],
         "fastvit_t8", "Upload FastViT model")]
    assert "pushed to https://huggingface.co/me/t8" in capsys.readouterr().out


def test_push_a_folder_and_the_dry_run(tmp_path, fake_hub, capsys):
    path = fastvit.save_checkpoint(weights_model("fastvit_t8"), tmp_path / "t8.safetensors")
    assert main(["push", str(path), "--out", str(tmp_path / "f"), "--dry-run"]) == 0
    assert fake_hub.calls == [] and (tmp_path / "f" / "config.json").is_file()
    assert push_to_hub(tmp_path / "f", "me/again") == "https://huggingface.co/me/again"
    assert fake_hub.calls[-1][2] == ["README.md", "config.json", "model.safetensors"]


def test_push_needs_a_login(tmp_path, fake_hub, capsys):
    fake_hub.logged_in = False
    with pytest.raises(WeightsError, match="not logged in .*hf auth login"):
        push_to_hub(tmp_path, "me/x")
    assert main(["push", str(tmp_path), "--repo", "me/x"]) == 2
    assert "fastvit push: error: not logged in" in capsys.readouterr().err
    assert fake_hub.calls == []
