"""Data pipeline: decoding, ImageFolder errors, transforms, mixing, digits, sharded sampling."""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from fastvit.data import (
    BadSample,
    Batch,
    DigitsDataset,
    ImageFolderDataset,
    MixupCutmix,
    NoisyRandAugment,
    ShardedEvalSampler,
    SoftTargetCrossEntropy,
    build_digits,
    build_eval_loader,
    build_image_folder,
    build_train_transform,
    collate_skip_bad,
    eval_resize_size,
    find_split,
    load_rgb,
    parse_rand_augment,
    smooth_one_hot,
)
from fastvit.errors import ConfigError, DataError
from fastvit.models import VARIANTS, base_cfg
from fastvit.pipeline import eval_transform
from tests.helpers.images import (
    make_image_folder,
    make_split_dataset,
    write_image,
    write_not_an_image,
    write_truncated_jpeg,
)

# -- decoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("RGBA", ".png"), ("P", ".png"),
                                         ("LA", ".png"), ("RGB", ".bmp"), ("RGB", ".tif"),
                                         ("P", ".gif"), ("CMYK", ".jpg"), ("L", ".jpg")])
def test_every_mode_decodes_to_rgb_like_pil(tmp_path, mode, suffix):
    path = write_image(tmp_path / f"x{suffix}", mode=mode)
    image = load_rgb(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 52)
    expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1).astype(int)
    # libjpeg (torchvision) and PIL may round a colour conversion differently by 1-2 levels.
    tolerance = 2 if suffix == ".jpg" else 0
    assert np.abs(image.numpy().astype(int) - expected).max() <= tolerance

CFG = base_cfg("fastvit_t8", VARIANTS["fastvit_t8"], 1000)  # 256 px, crop 0.9, bicubic


def test_16_bit_png_is_scaled_to_uint8(tmp_path):
    path = write_image(tmp_path / "deep.png", mode="I;16")
    image = load_rgb(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 52)
    low_byte_source = np.asarray(Image.open(path), dtype=np.int64) // 257  # written as v * 257
    assert np.abs(image[0].numpy().astype(int) - low_byte_source).max() <= 1


# -- ImageFolder: bad files and bad layouts ----------------------------------------------------


def _folder_with_bad_files(tmp_path):
    root = make_image_folder(tmp_path / "val", {"a": 2, "b": 1})
    truncated = write_truncated_jpeg(root / "a" / "truncated.jpg")
    not_image = write_not_an_image(root / "b" / "notes.jpg")
    return root, {str(truncated), str(not_image)}


def test_skip_mode_marks_bad_files_and_the_collate_reports_paths_and_reasons(tmp_path):
    root, bad = _folder_with_bad_files(tmp_path)
    ds = ImageFolderDataset(root, eval_transform(CFG, 32), bad_images="skip")
    assert ds.classes == ["a", "b"] and len(ds) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Python warning per file (and per epoch)
        items = [ds[i] for i in range(len(ds))]
    markers = [item for item in items if isinstance(item, BadSample)]
    assert {m.path for m in markers} == bad and all(m.reason for m in markers)
    batch = collate_skip_bad(items)
    assert isinstance(batch, Batch)
    assert batch.images.shape == (3, 3, 32, 32) and batch.targets.tolist() == [0, 0, 1]
    assert set(batch.skipped) == bad
    assert {p: p.reason for p in batch.skipped} == {m.path: m.reason for m in markers}


def test_bad_image_log_reports_each_file_once_and_lists_them(tmp_path, caplog):
    from fastvit.data.bad_images import BadImageLog
    from fastvit.data.datasets import UnreadableImage

    listing = tmp_path / "out" / "skipped_images.txt"
    log = BadImageLog(listing)
    first = [UnreadableImage("/d/a.jpg", "truncated"), UnreadableImage("/d/b.png", "not an image")]
    with caplog.at_level(logging.WARNING, logger="fastvit"):
        assert log.add(first, write=False) == 2
        assert not listing.exists()
        assert log.add([first[0]]) == 0  # met again next epoch: nothing new to say...
        assert log.add([UnreadableImage("/d/c.jpg", "bad")], quiet=True) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["skipping unreadable image /d/a.jpg (truncated)",
                     "skipping unreadable image /d/b.png (not an image)"]
    assert listing.read_text() == ("/d/a.jpg\ttruncated\n/d/b.png\tnot an image\n"
                                   "/d/c.jpg\tbad\n")  # ... but the list is written


def test_a_folder_without_val_gets_a_seeded_stratified_split(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root / "train", {"a": 10, "b": 20, "c": 1})
    train, val, classes = build_image_folder(root, train_transform=None, eval_transform=None,
                                             val_fraction=0.2, seed=3)
    assert classes == ["a", "b", "c"]
    assert (len(train), len(val)) == (25, 6)  # 2 of a, 4 of b, none of the single c
    val_labels = [val[i][1] for i in range(len(val))]
    assert sorted(val_labels) == [0, 0, 1, 1, 1, 1]
    train_paths = {train.dataset.samples[i][0] for i in train.indices}
    val_paths = {val.dataset.samples[i][0] for i in val.indices}
    assert not train_paths & val_paths and len(train_paths | val_paths) == 31
    again = build_image_folder(root, train_transform=None, eval_transform=None,
                               val_fraction=0.2, seed=3)[1]
    assert again.indices == val.indices  # seeded
    other = build_image_folder(root, train_transform=None, eval_transform=None,
                               val_fraction=0.2, seed=4)[1]
    assert other.indices != val.indices
    with pytest.raises(DataError, match="no val split"):
        build_image_folder(root, train_transform=None, eval_transform=None)


def test_skipped_paths_reach_the_main_process_from_workers(tmp_path):
    root, bad = _folder_with_bad_files(tmp_path)
    ds = ImageFolderDataset(root, eval_transform(CFG, 32), bad_images="skip")
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_skip_bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert {p for b in batches for p in b.skipped} == bad
    assert all(p.reason for b in batches for p in b.skipped)  # reasons cross processes too
    assert sum(len(b.targets) for b in batches if b.targets is not None) == 3


def test_a_batch_of_only_bad_images_has_no_tensors(tmp_path):
    batch = collate_skip_bad([BadSample("x.jpg", "broken"), BadSample("y.jpg", "broken")])
    assert batch.images is None and batch.targets is None and batch.skipped == ("x.jpg", "y.jpg")


def test_error_mode_stops_with_the_path(tmp_path):
    root, _ = _folder_with_bad_files(tmp_path)
    ds = ImageFolderDataset(root, None, bad_images="error")
    with pytest.raises(DataError, match=r"truncated\.jpg"):
        [ds[i] for i in range(len(ds))]


def test_unknown_bad_images_mode(tmp_path):
    make_image_folder(tmp_path / "val", {"a": 1})
    with pytest.raises(DataError, match="bad_images"):
        ImageFolderDataset(tmp_path / "val", bad_images="ignore")


def test_split_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "stray.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderDataset(tmp_path / "train")


def test_class_folder_without_images(tmp_path):
    make_image_folder(tmp_path / "train", {"a": 1})
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="without images.*empty"):
        ImageFolderDataset(tmp_path / "train")


def test_missing_split_and_validation_alias(tmp_path):
    make_split_dataset(tmp_path, ["a", "b"], val_dir="validation")
    assert find_split(tmp_path, "val") == tmp_path / "validation"
    assert find_split(tmp_path, "train") == tmp_path / "train"
    train, val, classes = build_image_folder(tmp_path, train_transform=None, eval_transform=None)
    assert classes == ["a", "b"] and len(train) == len(val) == 4
    with pytest.raises(DataError, match="no val split"):
        find_split(tmp_path / "train", "val")
    with pytest.raises(DataError, match="does not exist"):
        find_split(tmp_path / "nowhere", "train")


def test_class_sets_must_match(tmp_path):
    make_image_folder(tmp_path / "train", {"a": 1, "b": 1, "c": 1})
    make_image_folder(tmp_path / "val", {"a": 1, "b": 1, "d": 1})
    with pytest.raises(DataError, match=r"only in .*train.*: c; only in .*val.*: d"):
        build_image_folder(tmp_path, train_transform=None, eval_transform=None)


def test_fixed_class_map_and_unknown_folders(tmp_path):
    root = make_image_folder(tmp_path / "val", {"n1": 1, "n2": 1})
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    assert ImageFolderDataset(root).classes == ["n1", "n2"]
    ds = ImageFolderDataset(root, None, class_to_idx={"n1": 7, "n2": 3})
    assert sorted(t for _, t in ds.samples) == [3, 7]
    with pytest.raises(DataError, match="label map does not know: n2"):
        ImageFolderDataset(root, None, class_to_idx={"n1": 0})


# -- transforms --------------------------------------------------------------------------------


def test_train_transform_pipeline_and_output():
    tf = build_train_transform(64)
    kinds = [type(t) for t in tf.transforms]
    assert kinds[0] is v2.RandomResizedCrop and kinds[-1] is v2.RandomErasing
    assert tf.transforms[0].interpolation == InterpolationMode.BICUBIC
    assert tf.transforms[0].scale == (0.08, 1.0)
    assert v2.RandomHorizontalFlip in kinds and NoisyRandAugment in kinds
    assert tf.transforms[-1].p == 0.25
    out = tf(torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8))
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    plain = build_train_transform(64, rand_augment=None, re_prob=0, hflip=0)
    assert [type(t) for t in plain.transforms] == [v2.RandomResizedCrop, v2.ToImage,
                                                   v2.ToDtype, v2.Normalize]


def test_eval_crop_math():
    assert eval_resize_size(256, 0.9) == 284
    assert eval_resize_size(256, 0.95) == 269
    assert eval_resize_size(224, 0.875) == 256
    with pytest.raises(ConfigError):
        eval_resize_size(256, 1.5)


def test_eval_transform_is_resize_shorter_side_then_centre_crop():
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    out = eval_transform(CFG, 256, crop_pct=0.9)(image)
    resized = TF.resize(image, [284], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert resized.shape[-2:] == (284, 378)
    expected = TF.normalize(TF.to_dtype(TF.center_crop(resized, [256]), torch.float32,
                                        scale=True), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert out.shape == (3, 256, 256)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_rand_augment_spec_parsing():
    assert parse_rand_augment("rand-m9-mstd0.5") == {"magnitude": 9.0, "magnitude_std": 0.5,
                                                     "num_ops": 2}
    assert parse_rand_augment("rand-m7-n3")["num_ops"] == 3
    for bad in ("auto-m9", "rand-x9"):
        with pytest.raises(ConfigError):
            parse_rand_augment(bad)


def test_rand_augment_magnitude_noise_varies_per_call():
    aug = NoisyRandAugment(magnitude=9, magnitude_std=0.5)
    torch.manual_seed(0)
    draws = torch.tensor([aug.sample_magnitude() for _ in range(2000)])
    assert 8.95 < draws.mean() < 9.05 and 0.45 < draws.std() < 0.55
    assert draws.min() >= 0 and draws.max() <= 10 and len(draws.unique()) > 20
    fixed = NoisyRandAugment(magnitude=9, magnitude_std=0.0)
    assert {fixed.sample_magnitude() for _ in range(20)} == {9.0}
    clipped = NoisyRandAugment(magnitude=10, magnitude_std=3.0)
    assert max(clipped.sample_magnitude() for _ in range(200)) == 10.0


def test_rand_augment_applies_the_sampled_magnitude(monkeypatch):
    """Each call rotates by 30 deg * magnitude / 10 (torchvision's max rotation is 30)."""
    aug = NoisyRandAugment(num_ops=1, magnitude=9, magnitude_std=0.5)
    monkeypatch.setattr(aug, "_get_random_item", lambda space: ("Rotate", space["Rotate"]))
    seen = []

    def record(image, name, magnitude, **kwargs):
        seen.append(abs(magnitude))
        return image

    monkeypatch.setattr(aug, "_apply_image_or_video_transform", record)
    torch.manual_seed(1)
    expected = []
    for _ in range(30):
        aug(torch.zeros(3, 8, 8, dtype=torch.uint8))
        expected.append(30.0 * aug.last_magnitude / 10)
    assert seen == pytest.approx(expected, abs=1e-5)
    assert len(set(seen)) > 5


# -- mixing ------------------------------------------------------------------------------------


def test_smooth_one_hot_values():
    target = smooth_one_hot(torch.tensor([2, 0]), num_classes=10, smoothing=0.1)
    assert target[0, 2].item() == pytest.approx(0.91) and target[0, 0].item() == pytest.approx(0.01)
    assert target[1, 0].item() == pytest.approx(0.91)
    torch.testing.assert_close(target.sum(1), torch.ones(2))


def test_soft_target_cross_entropy_equals_label_smoothing_loss():
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = SoftTargetCrossEntropy()(logits, smooth_one_hot(labels, 5, 0.1))
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, label_smoothing=0.1))


def _indexed_batch(batch: int = 6, size: int = 16):
    """Image i is filled with the value i, so mixing weights can be read off the pixels."""
    images = torch.arange(batch, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, size, size)
    return images.clone(), torch.arange(batch) % 4


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixing_targets_match_the_pixels(mode):
    k, s = 4, 0.1
    mixer = MixupCutmix(k, prob=1.0, switch_prob=1.0 if mode == "cutmix" else 0.0,
                        label_smoothing=s)
    images, labels = _indexed_batch()
    torch.manual_seed(3)
    mixed, targets = mixer(images, labels)
    assert mixer.last_mode == mode
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    prev = labels.roll(1)
    for i in range(6):
        j = (i - 1) % 6  # torchvision pairs sample i with sample i-1
        if mode == "mixup":
            lam = (mixed[i].mean() - j) / (i - j)
        else:
            lam = (mixed[i] == i).float().mean()
        expected = torch.full((k,), s / k)
        expected[labels[i]] += lam * (1 - s)
        expected[prev[i]] += (1 - lam) * (1 - s)
        torch.testing.assert_close(targets[i], expected, atol=1e-5, rtol=0)


def test_mixing_probability_and_switch_probability_are_respected():
    images, labels = _indexed_batch(4, 8)
    mixer = MixupCutmix(4, prob=0.6, switch_prob=0.3, label_smoothing=0.1)
    torch.manual_seed(0)
    counts = Counter()
    for _ in range(1000):
        mixer(images, labels)
        counts[mixer.last_mode] += 1
    # Binomial(1000, p): 4 standard deviations is under 0.065 for every p here.
    assert abs(counts["none"] / 1000 - 0.4) < 0.065
    assert abs(counts["cutmix"] / 1000 - 0.6 * 0.3) < 0.065
    assert abs(counts["mixup"] / 1000 - 0.6 * 0.7) < 0.065


def test_no_mixing_gives_smoothed_one_hot_and_untouched_images():
    images, labels = _indexed_batch()
    mixer = MixupCutmix(4, prob=0.0, label_smoothing=0.1)
    out, targets = mixer(images, labels)
    assert out is images and mixer.last_mode == "none"
    torch.testing.assert_close(targets, smooth_one_hot(labels, 4, 0.1))
    only_cutmix = MixupCutmix(4, mixup_alpha=0.0, prob=1.0, switch_prob=0.0)
    only_cutmix(images, labels)
    assert only_cutmix.last_mode == "cutmix"
    with pytest.raises(ConfigError):
        MixupCutmix(4, prob=1.5)


# -- digits ------------------------------------------------------------------------------------


def test_digits_split_is_stratified_disjoint_and_deterministic():
    train, val = DigitsDataset("train", image_size=16), DigitsDataset("val", image_size=16)
    assert len(train) + len(val) == 1797 and len(val) == 359
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    all_counts = torch.bincount(torch.cat([train.targets, val.targets]), minlength=10)
    val_counts = torch.bincount(val.targets, minlength=10)
    expected = torch.tensor([round(int(n) * 0.2) for n in all_counts])
    assert torch.equal(val_counts, expected)
    again = DigitsDataset("val", image_size=16)
    assert torch.equal(again.indices, val.indices)
    other = DigitsDataset("val", image_size=16, seed=1)
    assert not torch.equal(other.indices, val.indices)
    image, label = val[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and 0 <= label < 10
    assert torch.equal(image[0], image[2])  # grey replicated to RGB


def test_build_digits_augments_train_only():
    train, val, classes = build_digits(24)
    assert classes == [str(i) for i in range(10)]
    torch.manual_seed(0)
    a, b = train[0][0], train[0][0]
    assert not torch.equal(a, b)  # random affine
    assert torch.equal(val[0][0], val[0][0])
    with pytest.raises(ConfigError):
        DigitsDataset("test")


# -- sharded evaluation sampling ---------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [0, 1, 5, 7, 10, 11])
def test_sharded_eval_sampler_covers_each_index_once(world, size):
    data = list(range(size))
    shards = [list(ShardedEvalSampler(data, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == data
    lengths = [len(ShardedEvalSampler(data, num_replicas=world, rank=r)) for r in range(world)]
    assert lengths == [len(s) for s in shards] and max(lengths) - min(lengths) <= 1


def test_eval_loader_yields_batches(tmp_path):
    root = make_image_folder(tmp_path / "val", {"a": 2, "b": 3})
    loader = build_eval_loader(ImageFolderDataset(root, eval_transform(CFG, 32)), batch_size=4)
    batches = list(loader)
    assert [len(b.targets) for b in batches] == [4, 1]
    assert torch.cat([b.targets for b in batches]).tolist() == [0, 0, 1, 1, 1]


def test_a_root_of_class_folders_is_its_own_train_split(tmp_path):
    """DIR/<class>/<image> (torchvision's ImageFolder layout) trains with a held-out split;
    a root holding split folders, or nothing usable, keeps the error with the layouts."""
    from fastvit.data import build_image_folder

    for cls in ("cat", "dog"):
        for i in range(5):
            write_image(tmp_path / "pets" / cls / f"{i}.png")
    assert find_split(tmp_path / "pets", "train") == tmp_path / "pets"
    train, val, classes = build_image_folder(tmp_path / "pets", train_transform=None,
                                             eval_transform=None, val_fraction=0.2)
    assert classes == ["cat", "dog"] and (len(train), len(val)) == (8, 2)
    with pytest.raises(DataError, match="no val split"):
        find_split(tmp_path / "pets", "val")
    (tmp_path / "only_val" / "val" / "cat").mkdir(parents=True)
    write_image(tmp_path / "only_val" / "val" / "cat" / "0.png")
    with pytest.raises(DataError, match=r"expected .*train/ \(or class folders directly"):
        find_split(tmp_path / "only_val", "train")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no train split"):
        find_split(tmp_path / "empty", "train")
