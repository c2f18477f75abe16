"""Hugging Face datasets as --data: a save_to_disk folder, Parquet files, hf:ORG/NAME offline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastvit.data.datasets import BadSample
from fastvit.data.shard_writer import write_shards
from fastvit.data.sources import HF, SHARDS, resolve_source
from fastvit.errors import DataError

datasets = pytest.importorskip("datasets")
NAMES = ["red", "green"]


def _png(seed: int) -> bytes:
    array = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _split(n: int, offset: int, bad: bool = False):
    images = [{"bytes": _png(offset + i), "path": None} for i in range(n)]
    if bad:
        images[0] = {"bytes": b"not an image", "path": None}
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=NAMES)})
    return datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]},
                                      features=features)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "saved"
    datasets.DatasetDict(train=_split(8, 0, bad=True), validation=_split(4, 100)).save_to_disk(
        str(path))
    return path


def test_a_saved_dataset_gives_splits_and_class_names(saved):
    source = resolve_source(str(saved))
    assert source.kind == HF
    train, val, classes = source.build(train_transform=None, eval_transform=None)
    assert (len(train), len(val), classes) == (8, 4, NAMES)
    image, label = val[1]
    assert image.shape == (3, 8, 8) and label == 1
    bad = train[0]
    assert isinstance(bad, BadSample) and bad.path.endswith("[train]#0")


def test_a_batch_is_read_at_once_with_each_rows_own_augmentation(saved):
    """The DataLoader's batched fetch (one Arrow read) gives what row-by-row reads give,
    augmentation seeds included, through a held-out Subset too."""
    import torch
    from torch.utils.data import Subset

    from fastvit.data import build_train_transform
    from fastvit.run.sampling import SeededDataset

    train, _, _ = resolve_source(str(saved)).build(
        train_transform=build_train_transform(16), eval_transform=None)
    keys = [(5, 11), (0, 12), (2, 13), (2, 14), (7, 15)]
    for dataset in (train, Subset(train, [7, 6, 5, 4, 3, 2, 1, 0])):
        batch = SeededDataset(dataset).__getitems__(keys)
        one_by_one = [SeededDataset(dataset)[key] for key in keys]
        for a, b in zip(batch, one_by_one, strict=True):
            assert type(a) is type(b)
            if isinstance(a, BadSample):
                assert a == b and a.path.endswith("[train]#0")
            else:
                assert torch.equal(a[0], b[0]) and a[1] == b[1]
        assert not torch.equal(batch[2][0], batch[3][0])  # same row, another seed


def test_a_train_only_dataset_holds_a_stratified_fraction_out(tmp_path):
    path = tmp_path / "only_train"
    datasets.DatasetDict(train=_split(10, 0)).save_to_disk(str(path))
    train, val, _ = resolve_source(str(path)).build(train_transform=None,
                                                    eval_transform=None, val_fraction=0.2)
    assert (len(train), len(val)) == (8, 2)


def test_parquet_files_are_a_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "pq" / "data").mkdir(parents=True)
    _split(6, 0).to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    _split(2, 50).to_parquet(str(tmp_path / "pq" / "data" / "validation-00000.parquet"))
    source = resolve_source(str(tmp_path / "pq"))
    assert source.kind == HF
    train, val, classes = source.build(train_transform=None, eval_transform=None)
    assert (len(train), len(val), classes) == (6, 2, NAMES)


def test_the_hub_offline_is_one_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"cannot load hf:nobody/nothing .*HF_HUB_OFFLINE=1"):
        resolve_source("hf:nobody/nothing").build(train_transform=None, eval_transform=None)


def _cache_as_a_hub_load_would(cache: Path, repo_id: str, splits: dict) -> None:
    """Leave in the datasets cache what ``load_dataset(repo_id)`` leaves after an online load:
    ``NAMESPACE___NAME/default/0.0.0/HASH/NAME-SPLIT.arrow`` and its ``dataset_info.json``
    (prepared here by the Parquet builder from local files, then named as the Hub's)."""
    import shutil

    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    files = {}
    for split, table in splits.items():
        files[split] = str(cache.parent / f"{split}.parquet")
        table.to_parquet(files[split])
    builder = Parquet(cache_dir=str(cache), dataset_name=f"{namespace}___{name}",
                      config_name="default", data_files=files, hash="0" * 16,
                      features=next(iter(splits.values())).features)
    builder.download_and_prepare()
    root = cache / f"{namespace}___{name}"
    (prepared,) = root.glob("default-*")  # a local build's config id carries its files' hash
    shutil.move(prepared, root / "default")
    for arrow in root.glob(f"default/*/*/{namespace}___{name}-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace(f"{namespace}___{name}-", f"{name}-")))


def test_a_hub_dataset_loads_offline_from_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "cache"
    cache.mkdir()
    _cache_as_a_hub_load_would(cache, "someorg/colours",
                               {"train": _split(6, 0), "validation": _split(4, 100)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    source = resolve_source("hf:someorg/colours")
    assert source.kind == HF
    train, val, classes = source.build(train_transform=None, eval_transform=None)
    assert (len(train), len(val), classes) == (6, 4, NAMES)
    image, label = val[1]
    assert image.shape == (3, 8, 8) and label == 1
    assert torch.equal(image, torch.from_numpy(
        np.array(Image.open(io.BytesIO(_png(101))))).permute(2, 0, 1))


def test_a_dataset_without_a_class_label_says_so(tmp_path):
    path = tmp_path / "plain"
    datasets.Dataset.from_dict({"image": [{"bytes": _png(0), "path": None}], "label": [0]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "label": datasets.Value("int64")})
                               ).save_to_disk(str(path))
    with pytest.raises(DataError, match="no ClassLabel column.*cast_column"):
        resolve_source(str(path)).build(train_transform=None, eval_transform=None)


def test_a_saved_dataset_becomes_shards(saved, tmp_path):
    written = write_shards(saved, tmp_path / "shards", shard_size=3, progress=False)
    assert written.classes == NAMES and written.total("train") == 8
    assert written.total("val") == 4
    source = resolve_source(str(tmp_path / "shards"))
    assert source.kind == SHARDS
    _, val, classes = source.build(train_transform=None, eval_transform=None)
    assert classes == NAMES and len(val) == 4


def test_evaluate_and_int8_calibration_take_a_datasets_folder(saved, tmp_path):
    from fastvit.cli import main
    from fastvit.deploy.calibration import int8_sets
    from fastvit.pipeline import eval_transform, load_model

    code = main(["evaluate", "--model", "fastvit_t8", "--data", str(saved), "--image-size",
                 "32", "--json", str(tmp_path / "eval.json")])
    assert code == 0
    import json

    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["num_classes"] == 2 and report["sets"]["val"]["count"] == 4
    loaded = load_model("fastvit_t8", None, num_classes=2)
    sets = int8_sets(loaded, eval_transform(loaded.cfg, 32), saved, calibration_size=3,
                     eval_dir=saved)
    assert len(list(sets.calibration_images())) == 3 and sets.labels == [0, 1, 0, 1]


def test_evaluate_scores_the_rows_training_held_out(tmp_path):
    import json

    from fastvit.checkpoints import save_checkpoint
    from fastvit.cli import main
    from fastvit.factory import create_model

    path = tmp_path / "only_train"
    datasets.DatasetDict(train=_split(10, 0)).save_to_disk(str(path))
    weights = tmp_path / "w.safetensors"
    save_checkpoint(create_model("fastvit_t8", num_classes=2).state_dict(), weights,
                    variant="fastvit_t8", class_names=NAMES,
                    metadata={"val_split": {"fraction": 0.2, "seed": 0}})
    assert main(["evaluate", "--checkpoint", str(weights), "--train-time", "--data",
                 str(path), "--image-size", "32", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["sets"]["val"]["count"] == 2


def test_a_small_dataset_gets_the_small_recipe(saved):
    from fastvit.train.config import default_recipe

    assert resolve_source(str(saved)).train_count() == 8
    assert default_recipe({"data.path": str(saved), "model.variant": "fastvit_t8"}) == "small"
