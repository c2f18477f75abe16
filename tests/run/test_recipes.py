"""One recipe shape for the four trainers (``fastvit.run.recipes``): the keys they share
sit at the same dotted paths with the same types, and every packaged recipe but the
roots starts from another with ``base:``."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest
import yaml

from fastvit.errors import CheckpointError
from fastvit.run.recipes import (
    BASE_KEY,
    SHARED_KEYS,
    list_recipes,
    read_recipe,
    recipe_dir,
    stored_recipe,
    to_dict,
)
from fastvit.run.variant_recipes import variant_recipe, variant_recipe_names
from fastvit.tasks.detection.recipe import DEFAULT_RECIPE as DET
from fastvit.tasks.detection.recipe import DetectionRecipe
from fastvit.tasks.hand.recipe import DEFAULT_RECIPE as HAND
from fastvit.tasks.hand.recipe import HandRecipe
from fastvit.tasks.recipes import load_task_recipe
from fastvit.tasks.segmentation.recipe import DEFAULT_RECIPE as SEG
from fastvit.tasks.segmentation.recipe import SegmentationRecipe
from fastvit.train.config import TrainConfig

RECIPES = {"train": TrainConfig, "detect": DetectionRecipe, "segment": SegmentationRecipe,
           "hand": HandRecipe}
#: the recipes that spell out every value; every other packaged recipe has ``base:``
ROOTS = {"": {"imagenet"}, "tasks": {DET, SEG, HAND}}


def leaf_types(cls: type, prefix: str = "") -> dict[str, typing.Any]:
    """``{"section.key": annotation}`` of a recipe dataclass tree."""
    out: dict[str, typing.Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(leaf_types(kind, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = kind
    return out


def base_type(annotation: typing.Any) -> typing.Any:
    """``float | None`` -> ``float``: whether None is allowed may differ (``optim.lr: null``
    means "from lr_base" to classification alone); the type of a value may not."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation


LEAVES = {name: leaf_types(cls) for name, cls in RECIPES.items()}


@pytest.mark.parametrize("trainer", sorted(RECIPES))
def test_the_shared_keys_sit_at_the_same_paths_with_the_same_types(trainer):
    leaves = LEAVES[trainer]
    missing = [key for key in SHARED_KEYS if key not in leaves]
    assert not missing, f"{RECIPES[trainer].__name__} lacks {missing}"
    wrong = {key: leaves[key] for key, kind in SHARED_KEYS.items()
             if base_type(leaves[key]) is not kind}
    assert not wrong, f"{RECIPES[trainer].__name__}: {wrong}"


def test_a_key_two_trainers_have_has_one_type():
    """``schedule.epochs``, ``data.image_size``, ``run.eval_every``...: wherever a dotted
    key occurs, its values have the same type."""
    seen: dict[str, dict[str, typing.Any]] = {}
    for trainer, leaves in LEAVES.items():
        for key, kind in leaves.items():
            seen.setdefault(key, {})[trainer] = base_type(kind)
    shared = {key: kinds for key, kinds in seen.items() if len(kinds) > 1}
    assert {"schedule.epochs", "data.image_size", "data.hflip", "run.eval_every",
            "schedule.warmup_iters", "model.num_classes"} <= set(shared)
    differing = {key: kinds for key, kinds in shared.items() if len(set(kinds.values())) > 1}
    assert not differing, differing


def test_every_key_is_in_a_section():
    """No recipe has top-level keys (what :func:`require_sections` tells apart)."""
    for trainer, leaves in LEAVES.items():
        assert all("." in key for key in leaves), trainer


@pytest.mark.parametrize("folder", sorted(ROOTS))
def test_every_packaged_recipe_but_the_roots_has_a_base(folder):
    for name in list_recipes(folder):
        path = recipe_dir(folder) / f"{name}.yaml"
        data = yaml.safe_load(path.read_text()) if path.is_file() else variant_recipe(name)
        if name in ROOTS[folder]:
            assert BASE_KEY not in data, name
        else:
            assert data.get(BASE_KEY), f"{name} spells out every value; start it with base:"
    assert set(variant_recipe_names()) <= set(list_recipes(""))


@pytest.mark.parametrize(("cls", "name"), [(DetectionRecipe, DET), (SegmentationRecipe, SEG),
                                           (HandRecipe, HAND)])
def test_the_task_roots_spell_out_every_key_once(cls, name):
    """A root is the one YAML a new key is added to: it holds every key of its dataclass
    (a missing key would fail to load; this keeps the file and the class in one order)."""
    data = read_recipe(name, "tasks")
    assert list(data) == [f.name for f in dataclasses.fields(cls)]
    assert to_dict(load_task_recipe(cls, name)) == yaml.safe_load(yaml.safe_dump(data))


def test_stored_recipes_keep_their_values_and_refuse_the_flat_shape():
    recipe = load_task_recipe(HandRecipe, HAND, values={"model.variant": "fastvit_t8",
                                                        "run.amp": "bf16"})
    stored = to_dict(recipe)
    stored["run"]["amp"] = True  # the old on/off switch
    stored["head"]["gone"] = 1  # a key a later version dropped
    del stored["loss"]["shape"]  # a key a later version added: from the packaged recipe
    back = stored_recipe(HandRecipe, stored, HAND, "tasks")
    assert back.model.variant == "fastvit_t8" and back.run.amp == "on"
    assert back.loss.shape == load_task_recipe(HandRecipe, HAND).loss.shape
    with pytest.raises(CheckpointError, match=r"run.pt: .*flat shape.*'model', 'lr'"):
        stored_recipe(HandRecipe, {"model": "fastvit_t8", "lr": 1e-3}, HAND, "tasks",
                      source="run.pt")


def test_resuming_a_checkpoint_with_the_flat_recipe_is_one_line(tmp_path):
    """``--resume`` of a run whose checkpoint has a recipe without sections: the same
    CheckpointError line, not a list of every key as "differing"."""
    import torch

    from fastvit.run.epochs import read_resume_state

    path = tmp_path / "ckpt_step00000002.pt"
    torch.save({"task": "hand", "recipe": {"model": "fastvit_t8", "lr": 1e-3}, "step": 2,
                "extra": {}, "model": {}}, path)
    current = to_dict(load_task_recipe(HandRecipe, HAND))
    with pytest.raises(CheckpointError, match=r"cannot resume .*flat shape"):
        read_resume_state(path, tmp_path, "hand", current, world_size=1)
