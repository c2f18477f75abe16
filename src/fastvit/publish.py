"""Publishing a model as a timm-compatible folder, and pushing it to the Hugging Face Hub.

:func:`save_pretrained` writes what ``timm.create_model("hf-hub:ORG/NAME",
pretrained=True)`` (or ``"local-dir:DIR"``) and :func:`fastvit.create_model`
(``"hf-hub:ORG/NAME"`` or the folder's path) both load:

* ``model.safetensors``: the weights in our key layout, which is timm's, with
  our metadata (variant, class names) in the header;
* ``config.json``: timm's format (``architecture``, ``num_classes``,
  ``num_features``, ``global_pool``, ``label_names``, ``pretrained_cfg`` with the
  preprocessing);
* ``README.md``: a model card (variant, data, metrics, how to load it).

:func:`push_to_hub` uploads such a folder through ``huggingface_hub``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from fastvit.checkpoints import inner_model, save_checkpoint
from fastvit.checkpoints.layouts import variant_signature
from fastvit.errors import CheckpointError, ConfigError
from fastvit.files import atomic_write_text, json_text
from fastvit.models import VARIANTS, FastVit, is_fused
from fastvit.pipeline import Loaded, load_model
from fastvit.weights.download import HUB_EXTRA, WeightsError
from fastvit.weights.resolve import read_config_json

log = logging.getLogger(__name__)

WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"
# pretrained_cfg keys that describe the weights' origin (where, which release, its
# accuracy): not true of a copy that may have been fine-tuned since
SOURCE_KEYS = ("file", "url", "hf_hub_id", "hf_hub_filename", "source", "state_dict", "tag",
               "top1", "dataset")


def _unwrap(model_or_loaded: nn.Module | Loaded) -> tuple[FastVit, list[str] | None]:
    if isinstance(model_or_loaded, Loaded):
        return inner_model(model_or_loaded.model), model_or_loaded.class_names
    model = inner_model(model_or_loaded)
    if not isinstance(model, FastVit):
        raise ConfigError(f"save_pretrained needs a FastViT model, got {type(model).__name__}")
    return model, None


def _check_layout(model: FastVit) -> None:
    """Only the train-time form is a layout timm's ``pretrained=True`` loads."""
    if model.features_only:
        raise CheckpointError("a features_only backbone has no classifier: save the "
                              "classification model it was made from")
    if is_fused(model):
        raise CheckpointError(
            f"this {model.variant} is reparameterized (fused): timm's create_model("
            f"pretrained=True) cannot load fused FastViT weights (its checkpoint filter takes "
            f"them for the official release's layout). Publish the train-time weights; "
            f"fastvit.load_model and timm.utils.reparameterize_model fuse them at load time")
    reference = {k for k in variant_signature(model.variant, False) if not k.startswith("head.")}
    keys = {k for k in model.state_dict() if not k.startswith("head.")}
    if keys != reference:
        raise CheckpointError(f"this {model.variant} does not have the train-time layout of "
                              f"its variant, which timm expects")


def hub_config(model: FastVit, class_names: Sequence[str] | None) -> dict[str, Any]:
    """timm's ``config.json`` for ``model`` (see :func:`timm.models.load_model_config_from_hf`)."""
    _check_layout(model)
    cfg = {k: v for k, v in model.pretrained_cfg.items()
           if k not in SOURCE_KEYS and k != "architecture" and v is not None}
    cfg["num_classes"] = model.num_classes
    args: dict[str, Any] = {}
    if model.in_chans != 3:
        args["in_chans"] = model.in_chans
        cfg["input_size"] = (model.in_chans, *tuple(cfg["input_size"])[1:])
    config: dict[str, Any] = {"architecture": model.variant, "num_classes": model.num_classes,
                              "num_features": model.num_features, "global_pool": "avg"}
    if args:
        config["model_args"] = args
    if class_names is not None:
        config["label_names"] = list(class_names)
    config["pretrained_cfg"] = cfg
    return config


def model_card(model: FastVit, config: Mapping[str, Any], *, repo_id: str | None = None,
               dataset: str | None = None, metrics: Mapping[str, float] | None = None) -> str:
    """A README.md model card: what the model is, its data and metrics, how to load it."""
    spec = VARIANTS[model.variant]
    cfg = config["pretrained_cfg"]
    size = tuple(cfg["input_size"])[-1]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    data = dataset or cfg.get("dataset") or "unspecified"
    where = f"hf-hub:{repo_id}" if repo_id else "hf-hub:ORG/NAME"
    prep = (f"{cfg['interpolation']} resize of the shorter side to {size}/{cfg['crop_pct']}, "
            f"centre crop {size}, mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}")
    rows = "\n".join(f"| {k} | {v} |" for k, v in (metrics or {}).items()) or "| - | - |"
    return f"""---
library_name: timm
tags:
- image-classification
- timm
- fastvit
---
# {model.variant}{' (' + repo_id + ')' if repo_id else ''}

A FastViT image classifier (Vasu et al., *FastViT: A Fast Hybrid Vision Transformer using
Structural Reparameterization*, ICCV 2023), saved by the `fastvit` package.

| | |
|---|---|
| variant | {model.variant} (depths {spec.depths}, widths {spec.widths}) |
| form | train-time (fuse with `fastvit.reparameterize` or timm's `reparameterize_model`) |
| classes | {model.num_classes} |
| data | {data} |
| parameters | {params:.2f} M |
| GMACs at 256 px (paper) | {spec.published.get('gmacs', 'n/a')} |
| preprocessing | {prep} |

## Metrics

| metric | value |
|---|---|
{rows}

## How to load

```python
import timm
model = timm.create_model("{where}", pretrained=True)

import fastvit
model = fastvit.create_model("{where}")
loaded = fastvit.load_model(checkpoint="{where}")  # deploy form + preprocessing + labels
```

```bash
fastvit predict image.jpg --pretrained {where}
```

## Citation

```bibtex
@inproceedings{{vasufastvit2023,
  author = {{Pavan Kumar Anasosalu Vasu and James Gabriel and Jeff Zhu and Oncel Tuzel and
            Anurag Ranjan}},
  title = {{FastViT: A Fast Hybrid Vision Transformer using Structural Reparameterization}},
  booktitle = {{Proceedings of the IEEE/CVF International Conference on Computer Vision}},
  year = {{2023}}
}}
```
"""


def save_pretrained(model_or_loaded: nn.Module | Loaded, directory: str | os.PathLike, *,
                    class_names: Sequence[str] | None = None, repo_id: str | None = None,
                    dataset: str | None = None, metrics: Mapping[str, float] | None = None
                    ) -> Path:
    """Write a timm-compatible folder (weights, ``config.json``, model card); returns it.

    ``model_or_loaded`` is a train-time FastViT (timm cannot load fused weights
    through ``pretrained=True``) or a :class:`fastvit.Loaded` from
    ``load_model(..., fused=False)``;
    its class names (or ``class_names``) become ``label_names``. ``dataset`` and
    ``metrics`` (e.g. ``{"top1": 76.2}``) go into the model card. Each file is
    written atomically.
    """
    model, names = _unwrap(model_or_loaded)
    names = list(class_names) if class_names is not None else names
    if names is not None and len(names) != model.num_classes:
        raise ConfigError(f"{len(names)} class names for a {model.num_classes}-class model")
    config = hub_config(model, names)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, folder / WEIGHTS_FILE, variant=model.variant, class_names=names)
    atomic_write_text(folder / CONFIG_FILE, json_text(config))
    atomic_write_text(folder / CARD_FILE, model_card(model, config, repo_id=repo_id,
                                                     dataset=dataset, metrics=metrics))
    log.info("wrote %s (%s, %s)", folder, WEIGHTS_FILE, CONFIG_FILE)
    return folder


def push_to_hub(source: str | os.PathLike | nn.Module | Loaded, repo_id: str, *,
                private: bool = False, token: str | None = None,
                commit_message: str = "Upload FastViT model", variant: str | None = None,
                metrics: Mapping[str, float] | None = None, dataset: str | None = None) -> str:
    """Upload a :func:`save_pretrained` folder (made now from a checkpoint or model when
    ``source`` is not one) to ``repo_id``; returns the repository URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise WeightsError(f"pushing to the Hugging Face Hub needs huggingface_hub: "
                           f"{HUB_EXTRA}") from None
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except Exception as err:  # no token, an expired one, or no network
        raise WeightsError(f"not logged in to the Hugging Face Hub ({str(err).splitlines()[0]})"
                           f": run `hf auth login` or set HF_TOKEN") from None
    log.info("pushing to %s as %s", repo_id, user.get("name", "?"))
    with tempfile.TemporaryDirectory(prefix="fastvit-push-") as scratch:
        folder = _as_folder(source, Path(scratch), repo_id=repo_id, variant=variant,
                            metrics=metrics, dataset=dataset)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                          commit_message=commit_message)
    return str(url)


def _as_folder(source: str | os.PathLike | nn.Module | Loaded, scratch: Path, **card: Any
               ) -> Path:
    if isinstance(source, nn.Module | Loaded):
        return save_pretrained(source, scratch, repo_id=card["repo_id"],
                               metrics=card["metrics"], dataset=card["dataset"])
    path = Path(source)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{path} is not a save_pretrained folder (needs "
                                  f"{CONFIG_FILE} and {WEIGHTS_FILE})")
        read_config_json(path / CONFIG_FILE)
        return path
    loaded = load_model(card["variant"], checkpoint=path, fused=False)
    return save_pretrained(loaded, scratch, repo_id=card["repo_id"], metrics=card["metrics"],
                           dataset=card["dataset"])
