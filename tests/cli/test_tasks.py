"""``fastvit.cli.tasks``: the flags ``detect``, ``segment`` and ``hand`` spell alike."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fastvit.cli import main as cli_main

# command -> (its data flags, the engine.train keyword that receives the split)
TASKS = {
    "detect": (["--train-images", "{d}", "--train-ann", "{d}/a.json"], "val_ann"),
    "segment": (["--data", "{d}"], "val_split"),
    "hand": (["--data", "{d}", "--mano", "{d}/mano.npz"], "eval_split"),
}
ENGINES = {"detect": "detection", "segment": "segmentation", "hand": "hand"}


def run_train(command: str, tmp_path: Path, monkeypatch, *flags: str,
              key: str | None = None) -> object:
    """What ``COMMAND train ... FLAGS`` hands its engine as the validation split (or as
    ``key``: ``recipe``...)."""
    seen = {}

    def train(recipe, **kwargs):  # the command's decision, without training
        seen.update(kwargs, recipe=recipe)
        return {"last_eval": {}, "checkpoint": "unused", "train": []}

    engine = importlib.import_module(f"fastvit.tasks.{ENGINES[command]}.engine")
    monkeypatch.setattr(engine, "train", train)  # imported here: a test alone has not yet
    data, split = TASKS[command]
    args = [command, "train", *(a.format(d=tmp_path) for a in data),
            "--out", str(tmp_path / "run"), *flags]
    assert cli_main(args) == 0
    return seen[key or split]


@pytest.mark.parametrize("command", sorted(TASKS))
def test_no_val_and_its_old_spelling(command, tmp_path, monkeypatch, capsys):
    assert run_train(command, tmp_path, monkeypatch, "--no-val") is None
    assert "--no-val" not in capsys.readouterr().err
    assert run_train(command, tmp_path, monkeypatch, "--val-split", "none") is None
    err = capsys.readouterr().err.strip()
    assert err == "fastvit: --val-split none is spelled --no-val now"
    with pytest.raises(SystemExit):
        cli_main([command, "train", "--help"])
    assert "--no-val" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["segment", "hand"])
def test_val_split_names_the_split(command, tmp_path, monkeypatch):
    assert run_train(command, tmp_path, monkeypatch, "--val-split", "mine") == "mine"


def test_hand_keeps_its_eval_split_alias(tmp_path, monkeypatch):
    assert run_train("hand", tmp_path, monkeypatch, "--eval-split", "mine") == "mine"


@pytest.mark.parametrize("command", sorted(TASKS))
def test_flags_and_set_reach_the_same_dotted_keys(command, tmp_path, monkeypatch):
    """The recipe shape of every trainer: plain flags and ``--set section.key=value``
    land in the sections ``fastvit train`` uses (``--set`` after the flag wins)."""
    recipe = run_train(command, tmp_path, monkeypatch, "--no-val", "--lr", "1e-4",
                       "--batch-size", "3", "--workers", "1", "--seed", "7",
                       "--model", "fastvit_t8", "--set", "optim.lr=3e-4",
                       "--set", "run.keep_last=5", "--set", "model.drop_path=0.05",
                       key="recipe")
    assert (recipe.optim.lr, recipe.data.batch_size, recipe.data.workers) == (3e-4, 3, 1)
    assert (recipe.run.seed, recipe.run.keep_last, recipe.model.variant) == (7, 5, "fastvit_t8")
    assert recipe.model.drop_path == 0.05


@pytest.mark.parametrize("command", sorted(TASKS))
def test_a_flat_key_names_its_section(command, tmp_path, capsys):
    """``--set lr=...`` (the keys had no sections before) says where the key lives."""
    data, _ = TASKS[command]
    rc = cli_main([command, "train", *(a.format(d=tmp_path) for a in data),
                   "--out", str(tmp_path / "run"), "--set", "lr=1e-4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "did you mean optim.lr?" in err, err


def test_flag_keys_of_the_four_trainers_agree():
    """A flag every trainer has sets the same dotted recipe key everywhere, and that key
    exists in the trainer's recipe."""
    from fastvit.run.recipes import get_value, load_recipe
    from fastvit.tasks.detection.recipe import DEFAULT_RECIPE as DET
    from fastvit.tasks.detection.recipe import DetectionRecipe
    from fastvit.tasks.hand.recipe import DEFAULT_RECIPE as HAND
    from fastvit.tasks.hand.recipe import HandRecipe
    from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE as SEG
    from fastvit.tasks.segmentation.recipe import SegmentationRecipe
    from fastvit.train.config import TrainConfig

    recipes = {"train": load_recipe(TrainConfig, "imagenet"),
               "detect": load_recipe(DetectionRecipe, DET, "tasks"),
               "segment": load_recipe(SegmentationRecipe, SEG, "tasks"),
               "hand": load_recipe(HandRecipe, HAND, "tasks")}
    where: dict[str, dict[str, str]] = {}
    for command, recipe in recipes.items():
        flags = importlib.import_module(f"fastvit.cli.{command}").FLAG_KEYS
        for flag, dotted in flags.items():
            get_value(recipe, dotted)  # AttributeError: a flag for a key that is not there
            where.setdefault(flag, {})[command] = dotted
    for flag in ("model", "pretrained", "batch_size", "lr", "workers", "seed", "epochs"):
        keys = set(where[flag].values())
        assert len(keys) == 1, (flag, where[flag])
