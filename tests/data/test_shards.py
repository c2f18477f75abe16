"""WebDataset shards: written by `fastvit shards`, split across ranks and workers with no
sample twice, resumed mid-epoch with nothing lost or repeated, bad members listed."""

from __future__ import annotations

import itertools
import tarfile
from pathlib import Path

import pytest
import torch

from fastvit.cli import main
from fastvit.data import collate_skip_bad
from fastvit.data.bad_images import BadImageLog
from fastvit.data.datasets import BadSample
from fastvit.data.shard_writer import write_shards
from fastvit.data.shards import SHARDS_JSON, ShardSplit, open_shards, stream_plan
from fastvit.data.sources import FOLDER, HF, SHARDS, resolve_source
from fastvit.errors import DataError
from fastvit.run.sampling import build_train_loader
from tests.helpers.images import write_image, write_not_an_image

CLASSES = ("ant", "bee", "cat")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """3 classes x 7 train (+ one unreadable) and x 2 val images, shards of 5."""
    root = tmp_path_factory.mktemp("folder")
    for split, n in (("train", 7), ("val", 2)):
        for c, name in enumerate(CLASSES):
            for i in range(n):
                write_image(root / split / name / f"{name}{i}.png", size=(8, 8),
                            seed=100 * c + i + (50 if split == "val" else 0))
    write_not_an_image(root / "train" / "ant" / "broken.jpg")
    out = tmp_path_factory.mktemp("shards")
    write_shards(root, out, shard_size=5, progress=False)
    return out


def test_the_writer_writes_whole_shards_and_an_index(shards):
    names = sorted(p.name for p in shards.iterdir())
    assert names == [SHARDS_JSON, *(f"train-{i:06d}.tar" for i in range(5)),
                     "val-000000.tar", "val-000001.tar"]  # no temporary file left
    dataset = open_shards(str(shards), "train", transform=None, bad_images="skip")
    assert dataset.classes == list(CLASSES) and len(dataset) == 22
    with tarfile.open(shards / "train-000000.tar") as tar:
        members = tar.getnames()
    assert len(members) == 10 and all(m.endswith((".png", ".jpg", ".cls")) for m in members)


def test_data_values_are_recognised_without_a_flag(shards, tmp_path):
    write_image(tmp_path / "folder" / "train" / "a" / "x.png", size=(8, 8))
    assert resolve_source(str(tmp_path / "folder")).kind == FOLDER
    assert resolve_source(str(shards)).kind == SHARDS
    pattern = f"{shards}/train-{{000000..000004}}.tar"
    assert resolve_source(pattern).kind == SHARDS
    assert resolve_source("hf:org/name").kind == HF
    train, val, classes = resolve_source(pattern).build(train_transform=None,
                                                        eval_transform=None)
    assert (len(train), len(val), classes) == (22, 6, list(CLASSES))


def _positions(split: ShardSplit, **kwargs) -> list[tuple[int, int]]:
    plans, _ = stream_plan(split, **kwargs)
    return [(seg.shard, m) for plan in plans for seg in plan for m in range(seg.start, seg.stop)]


@pytest.mark.parametrize("counts", [[5, 5, 5, 5, 2], [40], [7, 3]])
def test_ranks_and_workers_share_an_epoch_without_duplicates(counts):
    """More shards than rank x worker streams, and fewer (split by sample then)."""
    split = ShardSplit([f"s{i}.tar" for i in range(len(counts))], counts)
    for epoch in range(2):
        seen = [_positions(split, rank=r, world_size=2, streams=3, batch_size=2, seed=1,
                           epoch=epoch, shuffle=True) for r in range(2)]
        flat = seen[0] + seen[1]
        assert len(flat) == len(set(flat))  # nothing twice, across ranks and workers
        assert len(seen[0]) == len(seen[1]) == (sum(counts) // 2 // 2) * 2  # whole batches
        everything = _positions(split, rank=0, world_size=1, streams=4, batch_size=None,
                                seed=0, epoch=0, shuffle=False)
        assert sorted(everything) == [(s, m) for s, n in enumerate(counts) for m in range(n)]


def _epoch_batches(dataset, streams: int, batch: int, start: int = 0) -> list[list]:
    """What a DataLoader of ``streams`` workers yields: worker p's batches in turn."""
    dataset.set_epoch(0, start)
    outs = [list(dataset.iter_stream((p + start) % streams)) for p in range(streams)]
    chunks = [[out[i:i + batch] for i in range(0, len(out), batch)] for out in outs]
    return [b for group in itertools.zip_longest(*chunks) for b in group if b is not None]


def _keys(batches: list[list]) -> list[str]:
    return [item.path if isinstance(item, BadSample) else str(item[0].sum().item() * 10
                                                               + item[1])
            for b in batches for item in b]


def test_a_stopped_epoch_resumes_with_nothing_lost_or_repeated(shards):
    dataset = open_shards(str(shards), "train", transform=None, bad_images="skip")
    dataset.batch_size, dataset.streams, dataset.seed, dataset.shuffle_buffer = 2, 3, 7, 4
    full = _epoch_batches(dataset, 3, 2)
    assert len(full) == dataset.usable_batches() == 11
    keys = _keys(full)
    assert len(keys) == len(set(keys)) == 22  # every sample once, the unreadable one too
    for stop in (1, 4, 8):
        assert _keys(_epoch_batches(dataset, 3, 2, start=stop)) == keys[2 * stop:]


def test_the_training_loader_resumes_exactly_with_worker_processes(shards):
    dataset = open_shards(str(shards), "train", transform=None, bad_images="skip")
    loader = build_train_loader(dataset, batch_size=4, workers=2, seed=3)
    loader.sampler.set_epoch(1)
    full = [(b.images, b.skipped) for b in loader]
    assert len(full) == loader.sampler.usable_batches == 5
    loader.sampler.set_epoch(1, 3)  # the run stopped after 3 batches
    rest = [(b.images, b.skipped) for b in loader]
    assert len(rest) == 2
    for (a, sa), (b, sb) in zip(full[3:], rest, strict=True):
        assert sa == sb and (a is None) == (b is None) and (a is None or torch.equal(a, b))


def test_an_unreadable_member_is_skipped_and_listed(shards, tmp_path):
    dataset = open_shards(str(shards), "train", transform=None, bad_images="skip")
    items = list(dataset.items_at(set(range(len(dataset)))))
    bad = [item for item in items if isinstance(item, BadSample)]
    assert len(bad) == 1 and bad[0].path.endswith(".tar:ant/broken.jpg")
    batch = collate_skip_bad(items)
    log = BadImageLog(tmp_path / "skipped_images.txt")
    log.add(batch.skipped)
    line = (tmp_path / "skipped_images.txt").read_text()
    assert line.startswith(bad[0].path + "\t") and "not an image" in line
    strict = open_shards(str(shards), "train", transform=None, bad_images="error")
    with pytest.raises(DataError, match=r"unreadable image .*broken\.jpg"):
        list(strict.items_at(set(range(len(strict)))))


def test_a_truncated_shard_is_one_line_naming_it(shards, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in shards.iterdir():
        data = path.read_bytes()
        if path.name == "train-000001.tar":
            data = data[: len(data) // 4 + 100]  # inside a member (the end is padding)
        (broken / path.name).write_bytes(data)
    dataset = open_shards(str(broken), "train", transform=None, bad_images="skip")
    with pytest.raises(DataError, match=r"truncated or corrupt shard .*train-000001\.tar"):
        list(dataset.items_at(set(range(len(dataset)))))
    (broken / SHARDS_JSON).unlink()  # without the index the shards are counted at once
    code = main(["evaluate", "--model", "fastvit_t8", "--data", f"{broken}/train-"
                 "{000000..000004}.tar", "--split", "train", "--image-size", "32"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "truncated or corrupt shard" in err and "train-000001.tar" in err


def test_fastvit_shards_command(tmp_path, capsys):
    for name in CLASSES[:2]:
        write_image(tmp_path / "imgs" / name / "a.png", size=(8, 8))
        write_image(tmp_path / "imgs" / name / "b.png", size=(8, 8), seed=3)
    code = main(["shards", str(tmp_path / "imgs"), str(tmp_path / "out"), "--shard-size", "3",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "train: 4 samples in 2 shard(s)" in out
    assert main(["shards", str(tmp_path / "imgs"), str(tmp_path / "o2"), "--shard-size",
                 "0"]) == 2


def test_int8_calibration_takes_shards(shards):
    from fastvit.deploy.calibration import int8_sets
    from fastvit.pipeline import eval_transform, load_model

    loaded = load_model("fastvit_t8", None, num_classes=3)
    sets = int8_sets(loaded, eval_transform(loaded.cfg, 32), str(shards), calibration_size=4,
                     eval_dir=str(shards))
    calibration = list(sets.calibration_images())
    assert len(calibration) == 4 and calibration[0].shape == (3, 32, 32)
    assert sets.labels == [0, 0, 1, 1, 2, 2]  # the val shards, in order


def test_shards_behind_an_fsspec_url(shards):
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for path in shards.iterdir():
        memory.pipe(f"/bucket/{path.name}", path.read_bytes())
    pattern = "memory://bucket/train-{000000..000004}.tar"
    assert resolve_source(pattern).kind == SHARDS
    train, val, classes = resolve_source(pattern).build(train_transform=None,
                                                        eval_transform=None)
    assert (len(train), len(val), classes) == (22, 6, list(CLASSES))
    assert len(list(val)) == 6


def test_a_small_shard_set_gets_the_small_recipe(shards, caplog):
    import logging

    from fastvit.train.config import default_recipe

    assert resolve_source(str(shards)).train_count() == 22
    with caplog.at_level(logging.INFO):
        assert default_recipe({"data.path": str(shards), "model.variant": "fastvit_t8"}) == \
            "small"
    assert "22 training images" in caplog.text
