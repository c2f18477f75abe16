"""Recipes carry the paper's values; every key is overridable from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fastvit.errors import ConfigError
from fastvit.models import VARIANTS, list_models
from fastvit.run.recipes import apply_overrides, list_recipes, recipe_dir, to_dict
from fastvit.train.config import build_config, load_recipe, resume_mismatches, validate

REPO = Path(__file__).resolve().parents[2]
# every packaged recipe fully resolved, captured while each variant recipe was a full copy
RESOLVED_BEFORE = Path(__file__).with_name("packaged_recipes_resolved.json")
# the official release's training and distillation commands: drop path and mixup
OFFICIAL = {  # variant: (drop path, mixup, distill drop path, distill mixup)
    "fastvit_t8": (0.0, 0.2, 0.0, 0.2), "fastvit_t12": (0.0, 0.2, 0.0, 0.2),
    "fastvit_s12": (0.0, 0.2, 0.0, 0.2), "fastvit_sa12": (0.1, 0.2, 0.0, 0.8),
    "fastvit_sa24": (0.1, 0.2, 0.05, 0.8), "fastvit_sa36": (0.2, 0.2, 0.1, 0.8),
    "fastvit_ma36": (0.35, 0.8, 0.2, 0.8),
}


def test_packaged_recipes_are_the_only_copies():
    assert not (REPO / "configs").exists(), "recipes live in src/fastvit/configs only"
    paper = list_models()  # the MCi towers have no ImageNet recipe
    expected = {*paper, *(f"{v}_distill" for v in paper), "imagenet", "distill",
                "fastvit_ma36_ft384", "digits_t8", "small", "finetune", "linear_probe"}
    assert set(list_recipes()) == expected
    # a variant's recipes come from its row of the table, never from a file of their own
    files = {p.stem for p in recipe_dir().glob("*.yaml")}
    assert files == {"imagenet", "distill", "fastvit_ma36_ft384", "digits_t8", "small",
                     "finetune", "linear_probe"}


def test_every_packaged_recipe_resolves_to_the_values_it_had_as_a_full_copy():
    """Inheriting changed no value a user gets from ``--config NAME`` (the recipes that
    were full copies, and those that started from them)."""
    before = json.loads(RESOLVED_BEFORE.read_text())
    # the two new bases, and the linear probe (never a full copy)
    assert set(list_recipes()) - set(before) == {"imagenet", "distill", "linear_probe"}
    for name, values in before.items():
        assert to_dict(load_recipe(name)) == values, name


def test_only_the_bases_spell_out_every_key():
    """A recipe setting shared by the variants is one line in imagenet.yaml."""
    sections = {"model", "data", "optim", "schedule", "ema", "distill", "run"}
    for path in recipe_dir().glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if path.stem == "imagenet":
            assert set(raw) == sections
            assert raw["model"]["drop_path"] is None and raw["data"]["crop_pct"] is None
        else:
            assert "base" in raw, f"{path.name} should start from a base recipe"


@pytest.mark.parametrize("variant", list_models())
def test_variant_recipes_carry_the_paper_values(variant):
    spec = VARIANTS[variant]
    for name, distilled in ((variant, False), (f"{variant}_distill", True)):
        cfg = load_recipe(name)
        assert cfg.model.variant == variant and cfg.run.out_dir == f"runs/{name}"
        # lr 1e-3 at a global batch of 1024, scaled linearly for other batches
        assert cfg.optim.lr is None and cfg.optim.lr_base == 1e-3
        assert cfg.optim.lr_base_batch == 1024
        assert cfg.optim.global_batch == 1024 and cfg.data.batch_size == 128  # 8 GPUs x 128
        assert cfg.optim.accum_steps == 1 and cfg.optim.weight_decay == 0.05
        # 300 epochs of warmup + cosine, then 10 of cooldown: 310 in all
        assert cfg.schedule.epochs == 310 and cfg.schedule.warmup_epochs == 5
        assert cfg.schedule.cooldown_epochs == 10
        assert cfg.schedule.warmup_lr == 1e-6 and cfg.schedule.min_lr == 1e-5
        assert cfg.data.label_smoothing == 0.1 and cfg.data.random_erasing == 0.25
        assert cfg.data.randaugment_magnitude == 9 and cfg.data.randaugment_mstd == 0.5
        assert cfg.data.cutmix == 1.0 and cfg.data.image_size == 256
        assert cfg.data.interpolation == "bicubic"
        assert cfg.data.crop_pct == spec.crop_pct
        assert cfg.ema.enabled and cfg.ema.decay == 0.9995
        if distilled:
            assert cfg.distill.kind == "hard" and cfg.distill.teacher == "regnet_y_16gf"
            assert cfg.distill.alpha == 0.5
            assert cfg.model.drop_path == spec.recipe_distill_drop_path
            assert cfg.data.mixup == spec.recipe_distill_mixup
        else:
            assert cfg.distill.kind == "none"
            assert cfg.model.drop_path == spec.recipe_drop_path
            assert cfg.data.mixup == spec.recipe_mixup


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_the_table_holds_the_official_training_commands(variant):
    spec = VARIANTS[variant]
    assert (spec.recipe_drop_path, spec.recipe_mixup, spec.recipe_distill_drop_path,
            spec.recipe_distill_mixup) == OFFICIAL[variant]


def test_the_shared_base_leaves_the_variant_values_to_the_variant():
    """``--config imagenet --model V`` trains V with V's drop path and crop ratio."""
    cfg = _config(["--config", "imagenet", "--model", "fastvit_sa36"])
    assert cfg.model.variant == "fastvit_sa36"
    assert cfg.model.drop_path is None and cfg.data.crop_pct is None  # the variant's
    assert to_dict(load_recipe("distill"))["distill"]["kind"] == "hard"


def test_unknown_and_looping_recipes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'fastvit_xl'; packaged recipes: "
                                          "digits_t8, distill, fastvit_ma36"):
        load_recipe("fastvit_xl")
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="'base' chain loops back to itself"):
        load_recipe(str(loop))


def test_finetune_384_recipe():
    cfg = load_recipe("fastvit_ma36_ft384")
    assert cfg.data.image_size == 384 and cfg.schedule.epochs == 30
    assert cfg.optim.lr_base == 5e-5 and cfg.optim.weight_decay == 1e-8
    assert cfg.optim.global_batch == 512 and cfg.optim.lr_base_batch == 512
    with pytest.raises(ConfigError, match="--pretrained"):
        validate(cfg)
    cfg.model.pretrained = "weights.pt"
    validate(cfg)


def test_recipes_spell_every_key_or_start_from_a_base(tmp_path):
    """The packaged YAML is the source of truth: no value comes from a dataclass default."""
    t8, digits = to_dict(load_recipe("fastvit_t8")), to_dict(load_recipe("digits_t8"))
    # digits_t8 states only what differs and takes the rest from fastvit_t8 (``base:``)
    assert digits["data"]["crop_pct"] == t8["data"]["crop_pct"]
    assert digits["data"]["path"] == "digits" and digits["data"]["image_size"] == 32
    partial = tmp_path / "partial.yaml"
    partial.write_text("model: {variant: fastvit_t8}\n")
    with pytest.raises(ConfigError, match="missing recipe key"):
        load_recipe(str(partial))
    based = tmp_path / "based.yaml"
    based.write_text("base: fastvit_sa12\noptim: {lr_base: 0.002}\n")
    cfg = load_recipe(str(based))
    assert cfg.optim.lr_base == 0.002 and cfg.model.variant == "fastvit_sa12"
    assert cfg.optim.weight_decay == 0.05  # from the base


def _config(argv: list[str]):
    """The recipe ``fastvit train ARGV`` runs (flags parsed by the real parser)."""
    from fastvit.cli import build_parser
    from fastvit.cli.train import config_values

    args = build_parser("train")[0].parse_args(argv)
    return build_config(args.config, config_values(args), args.overrides)


def test_cli_flags_and_set_overrides():
    cfg = _config(["--model", "fastvit_sa12", "--lr", "5e-4", "--epochs", "30",
                   "--channels-last", "--set", "optim.weight_decay=1e-2",
                   "--set", "data.scale=[0.5, 1.0]", "--set", "optim.lr=2e-4",
                   "--set", "optim.clip_grad=null", "--set", "ema.enabled=false"])
    assert cfg.model.variant == "fastvit_sa12" and cfg.model.drop_path == 0.1  # sa12 recipe
    assert cfg.optim.lr == 2e-4  # --set comes after the plain flag
    assert cfg.optim.lr_base is None  # --lr is absolute: the recipe's scaled form is dropped
    assert cfg.schedule.epochs == 30 and cfg.run.channels_last
    assert cfg.optim.weight_decay == 0.01 and cfg.data.scale == (0.5, 1.0)
    assert cfg.optim.clip_grad is None and cfg.ema.enabled is False
    digits = _config(["--data", "digits"])
    assert digits.data.path == "digits" and digits.data.image_size == 32


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown recipe key 'optim.lrr'"),
    ("nope.lr=1", "unknown recipe key 'nope.lr'"),
    ("optim.lr=fast", "optim.lr expects a float"),
    ("data.batch_size=2.5", "data.batch_size expects a int"),
    ("ema.enabled=maybe", "ema.enabled expects a bool"),
    ("data.scale=[1]", "data.scale expects 2 values"),
    ("optim.lr", "expects KEY=VALUE"),
])
def test_bad_overrides_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        apply_overrides(load_recipe("fastvit_t8"), [override])


def test_cli_reports_errors_without_traceback(capsys, tmp_path):
    from fastvit.cli import main

    assert main(["train", "--model", "fastvit_t8", "--set", "optim.betas=[0.9]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit train: error: ") and "Traceback" not in err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown recipe key 'optim.learning_rate'" in capsys.readouterr().err
    assert main(["train", "--model", "fastvit_t8"]) == 2
    assert "no training data" in capsys.readouterr().err
    assert main(["train", "--config", "fastvit_sa12_distill", "--data", str(tmp_path)]) == 2
    assert "--teacher-weights" in capsys.readouterr().err


def test_print_config_round_trips(capsys, tmp_path):
    from fastvit.cli import main

    assert main(["train", "--model", "fastvit_sa24", "--set", "data.mixup=0",
                 "--print-config"]) == 0
    printed = capsys.readouterr().out
    saved = tmp_path / "recipe.yaml"
    saved.write_text(printed)
    again = load_recipe(str(saved))
    assert again.data.mixup == 0.0 and again.model.variant == "fastvit_sa24"
    assert resume_mismatches(to_dict(again), to_dict(load_recipe("fastvit_sa24"))) == [
        "data.mixup: checkpoint 0.0, this run 0.2"]


# -- plain flags mean what they say (timm / torchvision semantics) ---------------------------


def test_batch_size_alone_means_no_accumulation_and_lr_flags_are_exclusive():
    paper = _config(["--model", "fastvit_sa12"])
    assert (paper.optim.global_batch, paper.optim.accum_steps) == (1024, 1)  # recipe kept
    plain = _config(["--model", "fastvit_sa12", "--batch-size", "64"])
    assert plain.data.batch_size == 64
    assert (plain.optim.global_batch, plain.optim.accum_steps) == (None, 1)
    asked = _config(["--model", "fastvit_sa12", "--batch-size", "64", "--global-batch", "256"])
    assert asked.optim.global_batch == 256
    accum = _config(["--model", "fastvit_sa12", "--batch-size", "64", "--accum-steps", "4"])
    assert (accum.optim.global_batch, accum.optim.accum_steps) == (None, 4)
    absolute = _config(["--model", "fastvit_sa12", "--lr", "3e-4"])
    assert (absolute.optim.lr, absolute.optim.lr_base) == (3e-4, None)
    scaled = _config(["--config", "small", "--lr-base", "1e-3"])
    assert (scaled.optim.lr, scaled.optim.lr_base) == (None, 1e-3)
    with pytest.raises(ConfigError, match="give one"):
        _config(["--model", "fastvit_t8", "--lr", "1e-3", "--lr-base", "1e-3"])
    # --set means the same as the plain flag (the recipe's other form is dropped) ...
    via_set = _config(["--model", "fastvit_t8", "--set", "optim.lr=1e-3",
                       "--set", "optim.accum_steps=2"])
    assert (via_set.optim.lr, via_set.optim.lr_base) == (1e-3, None)
    assert (via_set.optim.global_batch, via_set.optim.accum_steps) == (None, 2)
    validate(via_set)
    # ... while a recipe file that sets both forms is refused, naming the fix
    both = load_recipe("fastvit_t8")
    both.optim.lr = 1e-3
    with pytest.raises(ConfigError, match="exactly one of optim.lr.*set the other to null"):
        validate(both)
    both = load_recipe("fastvit_t8")
    both.optim.accum_steps = 2
    with pytest.raises(ConfigError, match="global_batch and optim.accum_steps"):
        validate(both)


def _plan(argv: list[str], train_images: int, world: int = 1):
    from fastvit.run.distributed import DistEnv
    from fastvit.train.plan import make_plan

    cfg = _config(argv)
    validate(cfg)
    return make_plan(cfg, DistEnv(world_size=world), train_images)


def test_plan_epochs_batch_lr_and_short_warmup():
    # the paper recipe on 8 processes: 310 epochs with the cooldown inside, no accumulation
    paper = _plan(["--model", "fastvit_t8"], 1_281_167, world=8)
    assert (paper.total_epochs, paper.global_batch, paper.accum) == (310, 1024, 1)
    assert paper.lr == pytest.approx(1e-3) and not paper.notes
    steps = paper.steps_per_epoch
    assert (paper.warmup_steps, paper.cooldown_steps, paper.cosine_steps) == (
        5 * steps, 10 * steps, 295 * steps)
    # on one process the recipe's global batch is reached by accumulation (stated)
    one = _plan(["--model", "fastvit_t8"], 1_281_167)
    assert (one.accum, one.global_batch, one.lr) == (8, 1024, pytest.approx(1e-3))
    # plain flags: exactly the epochs asked, batch x processes, lr scaled from lr_base
    short = _plan(["--model", "fastvit_t8", "--epochs", "6", "--batch-size", "64"], 6400, 2)
    assert (short.total_epochs, short.accum, short.global_batch) == (6, 1, 128)
    assert short.steps_per_epoch == 6400 // 128 and short.total_steps == 6 * 50
    assert short.lr == pytest.approx(1e-3 * 128 / 1024)
    assert short.lr_rule == "lr_base 0.001 x 128 / 1024"
    # 5 warmup + 10 cooldown epochs do not fit 6: scaled to half the run, with a note
    assert (short.warmup_epochs, short.cooldown_epochs) == pytest.approx((1.0, 2.0))
    assert "shortened to warmup 1 + cooldown 2 epochs" in short.notes[0]
    assert short.warmup_steps + short.cosine_steps + short.cooldown_steps == short.total_steps
    absolute = _plan(["--config", "small", "--batch-size", "8", "--lr", "0.01"], 100)
    assert (absolute.lr, absolute.lr_rule, absolute.steps_per_epoch) == (0.01, "as given", 12)
    with pytest.raises(ConfigError, match="fewer than one global batch of 64.*--batch-size"):
        _plan(["--config", "small"], 40)


def test_a_run_naming_no_recipe_gets_one_that_fits_its_data(tmp_path, monkeypatch, caplog):
    import logging

    from fastvit.train import config

    data = tmp_path / "data"
    for k in range(2):
        (data / "train" / f"c{k}").mkdir(parents=True)
        for i in range(3):
            (data / "train" / f"c{k}" / f"{i}.png").write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="fastvit"):
        small = _config(["--data", str(data), "--model", "fastvit_sa12"])
    assert (small.model.variant, small.optim.lr_base, small.ema.enabled) == (
        "fastvit_sa12", 2e-3, False)
    assert "recipe small: 6 training images are far from ImageNet scale" in caplog.text
    caplog.clear()
    monkeypatch.setenv("RANK", "1")  # under torchrun the choice is said once, by rank 0
    with caplog.at_level(logging.INFO, logger="fastvit"):
        assert _config(["--data", str(data)]).ema.enabled is False
    assert "recipe small" not in caplog.text
    monkeypatch.delenv("RANK")
    tuned = _config(["--data", str(data), "--pretrained", "w.safetensors"])
    assert tuned.model.require_pretrained and tuned.model.reset_classifier
    assert tuned.data.mixup == 0 and tuned.data.randaugment_magnitude == 5
    monkeypatch.setattr(config, "SMALL_DATA_IMAGES", 6)
    big = _config(["--data", str(data), "--model", "fastvit_sa12"])
    assert big.optim.lr_base == 1e-3 and big.schedule.epochs == 310  # the paper's
    assert _config(["--data", "digits"]).data.image_size == 32
    with pytest.raises(ConfigError, match="--pretrained"):
        validate(_config(["--config", "finetune", "--data", str(data)]))


@pytest.mark.parametrize("recipe, noted", [("imagenet", True), ("distill", True),
                                           ("fastvit_sa12", True), ("fastvit_t8_distill", True),
                                           ("small", False), ("fastvit_ma36_ft384", False)])
def test_a_paper_recipe_named_on_a_small_folder_gets_a_note(tmp_path, caplog, recipe, noted):
    import logging

    (tmp_path / "train" / "c0").mkdir(parents=True)
    (tmp_path / "train" / "c0" / "0.png").write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="fastvit"):
        _config(["--config", recipe, "--data", str(tmp_path)])
    assert (f"note: {recipe} is the paper's ImageNet recipe; for 1 training images"
            in caplog.text) is noted


def test_a_recipe_that_is_not_yaml_is_one_line_naming_the_place(tmp_path, capsys) -> None:
    from fastvit.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  path: [unclosed\n")
    assert main(["train", "--config", str(bad), "--data", "digits",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"fastvit train: error: {bad}: not valid YAML: ")
    assert "line 3, column 1" in err and not (tmp_path / "run").exists()
