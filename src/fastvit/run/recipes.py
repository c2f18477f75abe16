"""Recipes: YAML files in the package are the source of truth, dataclasses check them.

One rule for every trainer (classification and the dense tasks): a recipe is a
YAML file that spells out every value, or starts from another recipe with
``base: NAME`` and changes only some keys. It is a packaged file
(``fastvit/configs/NAME.yaml``, ``fastvit/configs/tasks/NAME.yaml``), the paper's
recipe of a variant derived from the variant table (``fastvit_<v>``,
``fastvit_<v>_distill``: :mod:`fastvit.run.variant_recipes`), or the user's own.
The recipe's dataclass (a tree of sections such as
:class:`fastvit.train.config.TrainConfig`) declares each key's type and is
validated before a run; loading converts every value to its declared type and
refuses unknown or missing keys. Precedence, lowest first: ``base`` recipe <
recipe file < plain command-line flags < ``--set section.key=value``.

All four trainers' recipes have one shape: the keys they share (:data:`SHARED_KEYS`)
sit in the same sections under the same names, so ``--set optim.lr=1e-4`` means the
same to ``fastvit train`` and ``fastvit detect|segment|hand train``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fastvit.errors import CheckpointError, ConfigError
from fastvit.run.variant_recipes import variant_recipe, variant_recipe_names

R = TypeVar("R")
BASE_KEY = "base"
#: The keys every trainer's recipe has, at the same dotted path with the same type
#: (``None`` allowed or not aside: ``optim.lr: null`` means "from lr_base" only to
#: classification). Keys two or three trainers share (``schedule.epochs``,
#: ``data.image_size``, ``data.hflip``, ``run.eval_every``...) follow the same rule.
SHARED_KEYS: dict[str, type] = {
    "model.variant": str, "model.pretrained": str, "model.drop_path": float,
    "data.batch_size": int, "data.workers": int,
    "optim.lr": float, "optim.weight_decay": float, "optim.clip_grad": float,
    "run.amp": str, "run.seed": int, "run.deterministic": bool, "run.keep_last": int,
    "run.log_every": int,
}


def recipe_dir(folder: str = "") -> Path:
    """The packaged recipes (``fastvit/configs`` or a sub-folder such as ``tasks``)."""
    return Path(str(resources.files("fastvit") / "configs")) / folder


def list_recipes(folder: str = "") -> list[str]:
    """The packaged recipes of ``folder``: its YAML files and, for the classification
    recipes, those derived from the variant table (:mod:`fastvit.run.variant_recipes`)."""
    files = {p.stem for p in recipe_dir(folder).glob("*.yaml")}
    return sorted(files | set(variant_recipe_names() if folder == "" else ()))


def read_recipe(name_or_path: str | Path, folder: str = "",
                _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The nested dict of a recipe with its ``base`` chain merged in."""
    source, key, data = _open_recipe(name_or_path, folder)
    if key in _seen:
        raise ConfigError(f"recipe {source}: 'base' chain loops back to itself")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    return merge(read_recipe(base, folder, (*_seen, key)), data)


def _open_recipe(name_or_path: str | Path, folder: str) -> tuple[str, str, dict[str, Any]]:
    """``(source, key, dict)`` of one recipe, its own ``base`` not yet merged: a YAML
    path, a packaged file of ``folder``, or a recipe derived from the variant table.
    ``source`` names it in messages, ``key`` tells two recipes apart in a ``base`` chain."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        return str(path), str(path.resolve()), _read_yaml(path)
    packaged = recipe_dir(folder) / f"{name_or_path}.yaml"
    if packaged.is_file():
        return str(packaged), str(packaged.resolve()), _read_yaml(packaged)
    derived = variant_recipe(str(name_or_path)) if folder == "" else None
    if derived is None:
        raise ConfigError(f"unknown recipe {str(name_or_path)!r}; packaged recipes: "
                          f"{', '.join(list_recipes(folder))} (or pass a .yaml path)")
    return f"{name_or_path} (from the variant table)", str(name_or_path), derived


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong and where (its own message quotes the
    source over several lines)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of key: value")
    return data


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` over ``base``, recursing into sections."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_recipe(cls: type[R], name_or_path: str | Path, folder: str = "",
                overrides: Iterable[str] | Mapping[str, Any] = ()) -> R:
    """Build recipe ``cls`` from a packaged name or a YAML path, then apply ``overrides``
    (``["key=value", "section.key=value"]`` strings or a ``{dotted key: value}`` dict)."""
    source = _open_recipe(name_or_path, folder)[0]
    recipe = from_dict(cls, read_recipe(name_or_path, folder), source=source)
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            set_value(recipe, key, value, source="override")
        return recipe
    return apply_overrides(recipe, overrides)


# ---------------------------------------------------------------------------
# dict <-> dataclass
# ---------------------------------------------------------------------------


def from_dict(cls: type[R], data: Mapping[str, Any], *, source: str = "recipe",
              prefix: str = "") -> R:
    """Instantiate dataclass ``cls`` from ``data``: every field present, no unknown keys,
    values converted to the declared types; dataclass-typed fields are sections."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the recipe'} must be a mapping, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [f"'{prefix}{k}'" for k in data if k not in names]
    if unknown:
        keys = "key " + unknown[0] if len(unknown) == 1 else "keys " + ", ".join(unknown)
        raise ConfigError(f"{source}: unknown recipe {keys}; valid keys"
                          f"{' of ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}")
    values = {}
    for name in names:
        if name not in data:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = from_dict(kind, data[name] or {}, source=source,
                                     prefix=f"{prefix}{name}.")
        else:
            values[name] = coerce(data[name], kind, f"{prefix}{name}")
    missing = [f"{prefix}{n}" for n in names if n not in data]
    if missing:
        raise ConfigError(f"{source}: missing recipe key(s) {', '.join(missing)} (a recipe "
                          f"spells out every value, or starts from one with 'base: NAME')")
    return cls(**values)


def to_dict(recipe: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) that YAML, JSON and ``weights_only`` accept."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def dump_yaml(recipe: Any) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the field's type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} expects {len(args)} values, got {value!r}")
        return tuple(coerce(v, a, key) for v, a in zip(value, args, strict=True))
    try:
        if annotation is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool | int):
                return bool(value)
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if annotation is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"{key} expects a {name}, got {value!r}") from None
    return value


# ---------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------


def set_value(recipe: Any, dotted: str, value: Any, *, source: str = "override") -> None:
    """Set ``key`` or ``section.key`` of ``recipe`` to ``value`` converted to its type."""
    target, parts = recipe, dotted.split(".")
    for part in parts[:-1]:
        section = getattr(target, part, None)
        if not dataclasses.is_dataclass(section):
            raise ConfigError(f"{source}: unknown recipe key {dotted!r} "
                              f"(keys: {', '.join(_keys(recipe))})")
        target = section
    hints = typing.get_type_hints(type(target))
    key = parts[-1]
    if key not in hints or dataclasses.is_dataclass(hints[key]):
        near = [k for k in _leaf_keys(recipe) if k.rsplit(".", 1)[-1] == key]
        hint = (f"did you mean {' or '.join(near)}?" if near
                else f"keys: {', '.join(_keys(recipe))}")
        raise ConfigError(f"{source}: unknown recipe key {dotted!r} ({hint})")
    setattr(target, key, coerce(value, hints[key], dotted))


def _leaf_keys(recipe: Any, prefix: str = "") -> list[str]:
    """Every ``section.key`` of ``recipe``."""
    out = []
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        out += (_leaf_keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value)
                else [f"{prefix}{f.name}"])
    return out


def _keys(recipe: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if dataclasses.is_dataclass(value):
            out.append(f"{prefix}{f.name}.*")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=5e-4"`` -> ``("optim.lr", 5e-4)`` (the value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=5e-4), got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
    return key.strip(), value


def apply_overrides(recipe: R, overrides: Iterable[str]) -> R:
    """Apply ``["optim.lr=5e-4", "data.mixup=0", ...]`` in order."""
    for item in overrides:
        key, value = parse_override(item)
        set_value(recipe, key, value, source="--set")
    return recipe


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """A nested mapping as ``{"data.batch_size": 128, ...}`` (keys joined with ``sep``)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}{sep}", sep))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_differences(stored: Mapping[str, Any], current: Mapping[str, Any],
                       ignore: Iterable[str] = ()) -> list[str]:
    """Keys whose values differ between a checkpoint's recipe and this run's (a resumed
    run must compute the same thing; ``ignore`` lists keys that may change)."""
    a, b = flatten(stored), flatten(current)
    skip = set(ignore)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        x, y = a.get(key), b.get(key)
        if (list(x) if isinstance(x, tuple) else x) != (list(y) if isinstance(y, tuple) else y):
            diffs.append(f"{key}: checkpoint {x!r}, this run {y!r}")
    return diffs


def get_value(recipe: Any, dotted: str) -> Any:
    """The value of ``section.key`` in ``recipe``."""
    value = recipe
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def require_sections(stored: Mapping[str, Any], source: str) -> None:
    """One clear line for a recipe stored before the task recipes had sections
    (top-level ``model: fastvit_sa12``, ``lr: 2e-4``...): it names no section."""
    leaves = [k for k, v in stored.items() if not isinstance(v, Mapping)]
    if leaves:
        raise CheckpointError(
            f"{source}: its recipe is in the flat shape of an older fastvit (top-level "
            f"{', '.join(repr(k) for k in leaves[:3])}{'...' if len(leaves) > 3 else ''}); "
            f"recipes have sections now (model.variant, optim.lr, run.amp...): train it "
            f"again with this version, or load it with the version that wrote it")


def stored_recipe(cls: type[R], stored: Mapping[str, Any], default: str, folder: str = "",
                  source: str = "checkpoint") -> R:
    """The recipe a checkpoint was trained with, readable even when the checkpoint is
    older than today's recipe keys: missing keys come from the packaged ``default``
    recipe, keys that no longer exist are dropped, and the old on/off ``run.amp``
    switch becomes ``"on"`` / ``"none"``. A recipe of the flat shape is refused
    (:func:`require_sections`)."""
    require_sections(stored, source)
    values = _known(cls, stored)
    run = values.get("run", {})
    if isinstance(run.get("amp"), bool):
        run["amp"] = "on" if run["amp"] else "none"
    return from_dict(cls, merge(read_recipe(default, folder), values), source=source)


def _known(cls: type, stored: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` without the keys ``cls`` (a tree of dataclasses) no longer has."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in stored:
            continue
        kind, value = hints[f.name], stored[f.name]
        if dataclasses.is_dataclass(kind):
            if isinstance(value, Mapping):
                out[f.name] = _known(kind, value)
        else:
            out[f.name] = value
    return out


def check_task_keys(recipe: Any) -> None:
    """Checks of the shared keys of a dense-task recipe (:data:`SHARED_KEYS`)."""
    from fastvit.models import VARIANTS
    from fastvit.run.device import AMP_CHOICES, LEGACY_AMP_ON

    if recipe.run.amp not in (*AMP_CHOICES, LEGACY_AMP_ON):
        raise ConfigError(f"run.amp must be one of {', '.join(AMP_CHOICES)}, "
                          f"got {recipe.run.amp!r}")
    if recipe.model.variant not in VARIANTS:
        raise ConfigError(f"model.variant {recipe.model.variant!r} is not a FastViT variant; "
                          f"choose one of {', '.join(VARIANTS)}")
    check_positive(recipe, ("data.batch_size", "optim.lr", "run.keep_last", "run.log_every"))
    for key in ("data.workers", "optim.weight_decay", "model.drop_path"):
        if get_value(recipe, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {get_value(recipe, key)}")


def check_positive(recipe: Any, keys: Iterable[str]) -> None:
    """ConfigError naming the first of ``keys`` (dotted) that is not > 0."""
    for key in keys:
        value = get_value(recipe, key)
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
