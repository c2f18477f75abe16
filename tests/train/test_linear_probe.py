"""Fine-tuning a MobileCLIP image tower as a classifier: ``fastvit train --config
linear_probe`` freezes everything but the new classifier, and the tower's preprocessing
(MCi0: mean 0, std 1) is the one trained with and stored with the weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torchvision.transforms import v2

from fastvit import create_model, save_checkpoint
from fastvit.cli import main
from fastvit.errors import ConfigError
from fastvit.models import randomize_model_stats
from fastvit.train.config import build_config, load_recipe, validate
from fastvit.train.data import build_datasets
from tests.helpers.training import make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_linear_probe_of_a_tower_changes_only_its_classifier(tmp_path, capsys) -> None:
    data = make_image_folder(tmp_path / "data", num_classes=2, train_per_class=4,
                             val_per_class=2, size=48)
    tower = randomize_model_stats(create_model("fastvit_mci0"), seed=3)  # 512-d embeddings
    weights = save_checkpoint(tower, tmp_path / "mci0.safetensors")
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    out = tmp_path / "probe"
    code = main(["train", "--config", "linear_probe", "--data", str(data), "--model",
                 "fastvit_mci0", "--pretrained", str(weights), "--epochs", "1",
                 "--image-size", "64", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                 "--amp", "none", "--no-progress", "--out", str(out)])
    text = capsys.readouterr()
    text = text.out + text.err
    assert code == 0, text[-3000:]
    assert "frozen: the backbone (model.freeze backbone): only the classifier head.fc trains " \
           "(2,050 of " in text
    assert "BatchNorm layer(s) in eval mode, no drop path" in text
    assert json.loads((out / "summary.json").read_text())["step"] == 2
    after = load_file(out / "best.safetensors")
    changed = sorted(k for k in before if not k.startswith("head.fc.")
                     and not torch.equal(before[k], after[k]))
    assert changed == []  # running statistics included: BatchNorm stayed in eval mode
    assert set(after) == set(before)
    assert after["head.fc.weight"].shape == (2, 1024)  # the CLIP projection was replaced
    with safe_open(out / "best.safetensors", "pt") as f:
        stored = json.loads(f.metadata()["pretrained_cfg"])
    assert stored["mean"] == [0.0, 0.0, 0.0] and stored["std"] == [1.0, 1.0, 1.0]


def test_tower_preprocessing_in_training_transforms(tmp_path) -> None:
    data = make_image_folder(tmp_path / "data", num_classes=2, train_per_class=2,
                             val_per_class=1, size=32)
    cfg = build_config("linear_probe", {"data.path": str(data), "model.variant": "fastvit_mci0",
                                        "model.pretrained": "x.safetensors"})
    train, val, _ = build_datasets(cfg)
    # a tower has no paper recipe: without --config, finetune (with --pretrained) or small
    for pretrained, recipe in (("x.safetensors", "finetune"), (None, "small")):
        chosen = build_config(None, {"data.path": str(data), "model.variant": "fastvit_mci0",
                                     "model.pretrained": pretrained})
        assert chosen.run.out_dir == f"runs/{recipe}"
    for dataset in (train, val):
        (norm,) = [t for t in dataset.transform.transforms if isinstance(t, v2.Normalize)]
        assert list(norm.mean) == [0.0, 0.0, 0.0] and list(norm.std) == [1.0, 1.0, 1.0]


def test_linear_probe_recipe_and_freeze_setting() -> None:
    cfg = load_recipe("linear_probe")
    assert cfg.model.freeze == "backbone" and cfg.model.drop_path == 0.0
    assert cfg.model.reset_classifier and cfg.model.require_pretrained
    assert cfg.data.mixup == 0.0 and cfg.data.cutmix == 0.0 and cfg.schedule.epochs == 10
    assert cfg.optim.lr_base > load_recipe("finetune").optim.lr_base
    assert load_recipe("finetune").model.freeze is None
    cfg.model.pretrained = "x.safetensors"
    validate(cfg)
    cfg.model.drop_path = 0.1
    with pytest.raises(ConfigError, match="drop path"):
        validate(cfg)
    cfg.model.drop_path, cfg.model.freeze = 0.0, "stages"
    with pytest.raises(ConfigError, match="model.freeze must be null or one of backbone"):
        validate(cfg)
