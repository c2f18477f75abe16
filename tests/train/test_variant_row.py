"""A new variant is one row of the variant table: the model, ``fastvit info``, its
training recipes and its published weights' entry follow with nothing else touched."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import fastvit
from fastvit.cli import main
from fastvit.errors import ConfigError
from fastvit.models import VARIANTS, VariantSpec
from fastvit.run.recipes import list_recipes, load_recipe, to_dict
from fastvit.train.config import TrainConfig, validate
from fastvit.weights import list_weights

FAKE = "fastvit_fake"
ROW = VariantSpec((1, 1, 1, 1), (16, 32, 64, 128), 2, (3,), layer_scale_init=1e-6,
                  crop_pct=0.875, recipe_drop_path=0.15, recipe_mixup=0.4,
                  recipe_distill_drop_path=0.05, recipe_distill_mixup=0.6,
                  published=dict(top1=70.1, top1_distilled=71.2, gmacs=0.05))


@pytest.fixture
def fake_row(monkeypatch):
    monkeypatch.setitem(VARIANTS, FAKE, ROW)


@pytest.mark.usefixtures("fake_row")
def test_the_model_is_built_from_the_row():
    assert FAKE in fastvit.list_models()
    model = fastvit.create_model(FAKE, num_classes=5).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert model.pretrained_cfg["crop_pct"] == 0.875


@pytest.mark.usefixtures("fake_row")
def test_info_lists_the_row(capsys):
    assert main(["info", FAKE, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["variant"], row["depths"], row["widths"]) == (FAKE, [1, 1, 1, 1],
                                                              [16, 32, 64, 128])
    assert row["mixers"][-1] == "Attention" and row["published_top1"] == 70.1


@pytest.mark.usefixtures("fake_row")
def test_the_row_brings_its_recipes():
    assert {FAKE, f"{FAKE}_distill"} <= set(list_recipes())
    imagenet = to_dict(load_recipe(TrainConfig, "imagenet"))
    for name, drop_path, mixup, kind in ((FAKE, 0.15, 0.4, "none"),
                                         (f"{FAKE}_distill", 0.05, 0.6, "hard")):
        cfg = load_recipe(TrainConfig, name)
        assert (cfg.model.variant, cfg.model.drop_path, cfg.data.mixup) == (
            FAKE, drop_path, mixup)
        assert (cfg.data.crop_pct, cfg.distill.kind, cfg.run.out_dir) == (
            0.875, kind, f"runs/{name}")
        # every other value is the shared ImageNet recipe's
        assert to_dict(cfg)["optim"] == imagenet["optim"]
        assert to_dict(cfg)["schedule"] == imagenet["schedule"]


@pytest.mark.usefixtures("fake_row")
def test_train_takes_the_row_by_config_and_by_model(capsys, tmp_path):
    assert main(["train", "--config", FAKE, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["variant"] == FAKE and printed["model"]["drop_path"] == 0.15
    assert main(["train", "--model", FAKE, "--print-config"]) == 0  # its paper recipe
    assert yaml.safe_load(capsys.readouterr().out) == printed
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"base: {FAKE}_distill\ndistill: {{teacher_weights: teacher.pt}}\n")
    cfg = load_recipe(TrainConfig, mine)
    validate(cfg)
    assert (cfg.model.drop_path, cfg.distill.teacher_weights) == (0.05, "teacher.pt")


@pytest.mark.usefixtures("fake_row")
def test_the_row_brings_its_weights_entry():
    entries = {w.tag: w for w in list_weights([FAKE])}
    assert entries["in1k"].top1 == 70.1 and entries["dist_in1k"].top1 == 71.2
    assert entries["in1k"].hf_hub_id == f"timm/{FAKE}.apple_in1k"
    assert entries["dist_in1k_reparam"].url_path == (
        f"image_classification_distilled_models/{FAKE}_reparam.pth.tar")


def test_without_the_row_its_recipes_are_unknown():
    assert FAKE not in list_recipes()
    with pytest.raises(ConfigError, match=f"unknown recipe '{FAKE}'"):
        load_recipe(TrainConfig, FAKE)
