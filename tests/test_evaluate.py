"""Evaluation: top-k on known logits, class subsets, ImageNet-C mCE, robustness sets, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvit.cli import main as cli_main
from fastvit.data import Batch
from fastvit.data.robustness import (
    CorruptionNormalizer,
    corruption_summary,
    find_imagenet_c,
    imagenet_wnids,
    parse_robustness_spec,
    subset_class_indices,
    subset_wnids,
)
from fastvit.errors import ConfigError, DataError
from fastvit.evaluate import Evaluator, evaluate_classifier, main_class_map
from fastvit.models import VARIANTS, base_cfg
from fastvit.pipeline import eval_transform
from tests.helpers.images import make_image_folder, write_image

# -- evaluate_classifier() on known logits ---------------------------------------------------


class TableModel(nn.Module):
    """Returns row ``i`` of a fixed logit table for an input holding the number ``i``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.view(len(x), -1)[:, 0].long()]


def ranked_logits(orders: list[list[int]], num_classes: int) -> torch.Tensor:
    """Logits whose descending order over classes is exactly ``order``."""
    table = torch.zeros(len(orders), num_classes)
    for row, order in enumerate(orders):
        for rank, cls in enumerate(order):
            table[row, cls] = float(num_classes - rank)
    return table


def loader_for(labels: list[int], batch_size: int = 3):
    xs = torch.arange(len(labels), dtype=torch.float32).view(-1, 1)
    ys = torch.tensor(labels)
    return [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, len(xs), batch_size)]


def test_top1_top5_and_loss_on_known_logits():
    orders = [[0, 1, 2, 3, 4, 5, 6],   # label 0 ranked 1st: top-1 and top-5 hit
              [3, 1, 0, 2, 4, 5, 6],   # label 1 ranked 2nd: top-5 hit only
              [0, 1, 3, 4, 5, 2, 6],   # label 2 ranked 6th: miss
              [3, 0, 1, 2, 4, 5, 6]]   # label 3 ranked 1st: hit
    table, labels = ranked_logits(orders, 7), [0, 1, 2, 3]
    out = evaluate_classifier(TableModel(table), loader_for(labels))
    assert out["top1"] == 50.0 and out["top5"] == 75.0 and out["count"] == 4
    expected_loss = F.cross_entropy(table, torch.tensor(labels)).item()
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-6)


class ModeSpy(TableModel):
    """A TableModel that records whether each forward ran in train mode."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(table)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return super().forward(x)


def test_a_wrapped_model_in_train_mode_is_scored_in_eval_mode_and_handed_back():
    spy = ModeSpy(ranked_logits([[0, 1], [1, 0]], 2)).train()
    out = evaluate_classifier(nn.DataParallel(spy), loader_for([0, 1]))
    assert out["top1"] == 100.0 and spy.modes == [False] and spy.training


def test_class_indices_restrict_logits_and_renumber_labels():
    subset = [1, 2, 5]
    orders = [[0, 5, 1, 2, 3, 4, 6],   # label 5: full top-1 is 0, within the subset 5 wins
              [1, 2, 0, 3, 4, 5, 6],   # label 2: subset winner is 1 -> miss
              [1, 0, 2, 3, 4, 5, 6]]   # label 1: hit
    table, labels = ranked_logits(orders, 7), [5, 2, 1]
    out = evaluate_classifier(TableModel(table), loader_for(labels), class_indices=subset)
    assert out["top1"] == pytest.approx(200 / 3) and out["top5"] == 100.0
    restricted = table[:, subset]
    expected_loss = F.cross_entropy(restricted, torch.tensor([2, 1, 0])).item()
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-6)
    with pytest.raises(DataError, match="outside the evaluated class subset"):
        evaluate_classifier(TableModel(table), loader_for([0, 1, 2]), class_indices=subset)


def test_evaluate_counts_skipped_images_and_autocasts():
    table = ranked_logits([[0, 1, 2], [2, 1, 0]], 3)
    batches = [Batch(torch.tensor([[0.0], [1.0]]), torch.tensor([0, 0]), ("bad.jpg",)),
               Batch(None, None, ("worse.jpg",))]
    out = evaluate_classifier(TableModel(table), batches, amp_dtype=torch.bfloat16)
    assert out["top1"] == 50.0 and out["count"] == 2
    assert out["skipped"] == ["bad.jpg", "worse.jpg"]
    with pytest.raises(DataError, match="no images"):
        evaluate_classifier(TableModel(table), [Batch(None, None, ("x",))])


# -- ImageNet-C metrics ------------------------------------------------------------------------


def test_mce_on_a_hand_computed_example():
    norm = CorruptionNormalizer.from_json({
        "errors": {"a": [0.5] * 5, "b": [0.8] * 5},
        "benchmark_corruptions": ["a", "b"], "clean_error": 0.3})
    errors = {"a": dict(zip(range(1, 6), [0.1, 0.2, 0.3, 0.4, 0.5], strict=True)),
              "b": {s: 0.4 for s in range(1, 6)},
              "extra": {1: 0.9}}
    out = corruption_summary(errors, norm, clean_error=0.1)
    # CE_a = 1.5 / 2.5, CE_b = 2.0 / 4.0; relative: (1.5 - 0.5) / (2.5 - 1.5), 1.5 / 2.5
    assert out["corruptions"]["a"]["ce"] == pytest.approx(60.0)
    assert out["corruptions"]["b"]["ce"] == pytest.approx(50.0)
    assert out["mce"] == pytest.approx(55.0)
    assert out["corruptions"]["a"]["relative_ce"] == pytest.approx(100.0)
    assert out["corruptions"]["b"]["relative_ce"] == pytest.approx(60.0)
    assert out["relative_mce"] == pytest.approx(80.0)
    assert out["mean_error"] == pytest.approx(35.0)
    assert "ce" not in out["corruptions"]["extra"]  # no AlexNet reference
    assert out["corruptions"]["extra"]["mean_error"] == pytest.approx(90.0)
    assert out["missing_benchmark_corruptions"] == []


def test_mce_with_missing_corruptions_is_partial():
    norm = CorruptionNormalizer.from_json({"errors": {"a": [0.5] * 5, "b": [0.8] * 5}})
    out = corruption_summary({"a": {s: 0.25 for s in range(1, 6)}, "b": {1: 0.4}}, norm)
    assert "mce" not in out and out["mce_partial"] == pytest.approx(50.0)
    assert out["missing_benchmark_corruptions"] == ["b"]
    assert out["corruptions"]["b"]["ce"] == pytest.approx(50.0)  # severity 1 only


def test_shipped_alexnet_table():
    norm = CorruptionNormalizer.load()
    assert len(norm.benchmark) == 15
    # The per-corruption averages quoted by ImageNet-C evaluation code (get_ce_alexnet).
    published_means = {"gaussian_noise": 0.886428, "shot_noise": 0.894468,
                       "impulse_noise": 0.922640, "defocus_blur": 0.819880,
                       "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
                       "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
                       "brightness": 0.564592, "contrast": 0.853204,
                       "elastic_transform": 0.646056, "pixelate": 0.717840,
                       "jpeg_compression": 0.606500}
    assert set(published_means) == set(norm.benchmark)
    for name, mean in published_means.items():
        assert sum(norm.errors[name]) / 5 == pytest.approx(mean, abs=1e-6), name
    alexnet = {c: dict(zip(range(1, 6), v, strict=True)) for c, v in norm.errors.items()}
    assert corruption_summary(alexnet, norm)["mce"] == pytest.approx(100.0)
    half = {c: {s: e / 2 for s, e in v.items()} for c, v in alexnet.items()}
    assert corruption_summary(half, norm)["mce"] == pytest.approx(50.0)
    torchvision_models = pytest.importorskip("torchvision.models")
    acc1 = torchvision_models.AlexNet_Weights.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert norm.clean_error == pytest.approx(1 - acc1 / 100, abs=1e-9)


def test_normalizer_override_file_is_checked(tmp_path):
    bad = tmp_path / "table.json"
    bad.write_text(json.dumps({"errors": {"a": [0.5, 0.5]}}))
    with pytest.raises(ConfigError, match="without 5 severities: a"):
        CorruptionNormalizer.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        CorruptionNormalizer.load(tmp_path / "missing.json")


# -- shipped class lists and folder discovery --------------------------------------------------


def test_wnid_assets():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    for name in ("imagenet-a", "imagenet-r"):
        sub = subset_wnids(name)
        assert len(sub) == 200 and set(sub) <= set(wnids)
    assert subset_class_indices("imagenet-a")[:3] == [6, 11, 13]


def test_imagenet_c_layouts(tmp_path):
    make_image_folder(tmp_path / "noise" / "gaussian_noise" / "1", {"n01440764": 1})
    make_image_folder(tmp_path / "fog" / "3", {"n01440764": 1})
    (tmp_path / "README.txt").write_text("not a folder")
    found = find_imagenet_c(tmp_path)
    assert set(found) == {"gaussian_noise", "fog"} and set(found["fog"]) == {3}
    with pytest.raises(DataError, match="no ImageNet-C corruptions"):
        find_imagenet_c(tmp_path / "noise" / "gaussian_noise" / "1" / "n01440764")


def test_robustness_spec_parsing(tmp_path):
    spec = parse_robustness_spec(f"imagenet-a={tmp_path}, sketch={tmp_path}")
    assert spec == {"imagenet-a": tmp_path, "sketch": tmp_path}
    with pytest.raises(ConfigError, match="unknown robustness set"):
        parse_robustness_spec(f"imagenet-z={tmp_path}")
    with pytest.raises(ConfigError, match="NAME=DIR"):
        parse_robustness_spec(str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        parse_robustness_spec(f"imagenet-r={tmp_path / 'nope'}")


# -- robustness sets end to end with a model whose predictions are known -----------------------


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def colour_for(index: int) -> tuple[int, int, int]:
    return (index % 256, index // 256 * 60, 0)


class ColourCodedModel(nn.Module):
    """Reads the ImageNet index a constant-colour image encodes; the logit of class j is
    ``-|j - index|``, so the nearest class in any restricted subset wins."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        pixel = ((x * torch.tensor(STD).view(1, 3, 1, 1) + mean) * 255).mean((2, 3)).round()
        index = pixel[:, 0] + 256 * (pixel[:, 1] / 60).round()
        return -(torch.arange(1000).view(1, -1) - index.view(-1, 1)).abs().float()


def write_coded(folder: Path, wnid: str, predicted: list[int]) -> None:
    for i, index in enumerate(predicted):
        write_image(folder / wnid / f"{i}.JPEG", size=(20, 24), color=colour_for(index), fmt="PNG")


def _evaluator(**overrides) -> Evaluator:
    cfg = base_cfg("fastvit_t8", VARIANTS["fastvit_t8"], 1000)
    return Evaluator(ColourCodedModel(), eval_transform(cfg, 16, 1.0), batch_size=4, workers=0,
                     **overrides)


def test_imagenet_a_maps_wnids_and_restricts_to_its_200_classes(tmp_path):
    wnids, subset = imagenet_wnids(), subset_class_indices("imagenet-a")
    target = subset[1]
    # an ImageNet class outside ImageNet-A whose nearest ImageNet-A class is `target`
    outside = next(k for k in range(1000) if k not in subset
                   and min(subset, key=lambda s: (abs(s - k), s)) == target
                   and sorted(abs(s - k) for s in subset)[:2][0] < sorted(
                       abs(s - k) for s in subset)[1])
    write_coded(tmp_path, wnids[target], [target, outside, subset[5]])
    out = _evaluator().subset("imagenet-a", tmp_path)
    assert out["count"] == 3 and out["num_classes"] == 200
    assert out["top1"] == pytest.approx(200 / 3)  # exact + nearest-in-subset hits, 1 miss
    write_image(tmp_path / "n99999999" / "x.png")
    with pytest.raises(DataError, match="not in the benchmark's class list: n99999999"):
        _evaluator().subset("imagenet-a", tmp_path)


def test_sketch_and_imagenet_c_with_known_predictions(tmp_path):
    wnids = imagenet_wnids()
    write_coded(tmp_path / "sketch", wnids[0], [0, 0])
    write_coded(tmp_path / "sketch", wnids[999], [999, 3])
    sketch = _evaluator().sketch(tmp_path / "sketch")
    assert sketch["top1"] == 75.0 and sketch["count"] == 4
    root = tmp_path / "c"
    write_coded(root / "blur" / "motion_blur" / "1", wnids[7], [7, 7])
    write_coded(root / "blur" / "motion_blur" / "2", wnids[7], [7, 9])
    corr = _evaluator().corruptions(root, clean_error=None)
    row = corr["corruptions"]["motion_blur"]
    assert row["errors"] == {"1": 0.0, "2": 50.0}
    alexnet = CorruptionNormalizer.load().errors["motion_blur"]
    assert row["ce"] == pytest.approx(100 * 0.5 / (alexnet[0] + alexnet[1]))
    assert corr["count"] == 4 and "mce" not in corr and len(corr[
        "missing_benchmark_corruptions"]) == 15


# -- the CLI -----------------------------------------------------------------------------------


def _tiny_val(tmp_path: Path, counts=(2, 2, 2)) -> Path:
    make_image_folder(tmp_path / "data" / "val", dict(zip(["ant", "bee", "cat"], counts,
                                                         strict=True)), size=(48, 60))
    return tmp_path / "data"


def test_validate_cli_writes_json_and_reparam_matches(tmp_path, capsys):
    from fastvit import create_model, randomize_model_stats
    from fastvit.checkpoints import save_checkpoint

    data = _tiny_val(tmp_path)
    model = randomize_model_stats(create_model("fastvit_t8", num_classes=3), seed=0)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    base = ["validate", "--model", "fastvit_t8", "--data", str(data), "--image-size", "64",
            "--workers", "0", "--batch-size", "4", "--checkpoint", str(ckpt)]
    assert cli_main(base + ["--json", str(tmp_path / "fused.json")]) == 0
    assert cli_main(base + ["--no-reparam", "--json", str(tmp_path / "unfused.json")]) == 0
    fused = json.loads((tmp_path / "fused.json").read_text())
    unfused = json.loads((tmp_path / "unfused.json").read_text())
    assert fused["reparameterized"] and not unfused["reparameterized"]
    assert fused["num_classes"] == 3 and fused["sets"]["val"]["count"] == 6
    assert fused["sets"]["val"]["top1"] == unfused["sets"]["val"]["top1"]
    assert fused["sets"]["val"]["loss"] == pytest.approx(unfused["sets"]["val"]["loss"], abs=1e-4)
    assert "val" in capsys.readouterr().out


def test_validate_cli_with_a_checkpoint_and_class_names(tmp_path):
    from fastvit import create_model
    from fastvit.checkpoints import save_checkpoint

    data = _tiny_val(tmp_path)
    model = create_model("fastvit_t8", num_classes=4)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors",
                           class_names=["zebra", "cat", "bee", "ant"])
    out = tmp_path / "r.json"
    assert cli_main(["validate", "--model", "fastvit_t8", "--checkpoint", str(ckpt), "--data",
                     str(data), "--image-size", "64", "--workers", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_classes"] == 4 and result["sets"]["val"]["count"] == 6


def test_main_split_label_map(tmp_path):
    root = make_image_folder(tmp_path / "val", {"ant": 1, "cat": 1})
    assert main_class_map(root, 4, ["zebra", "cat", "bee", "ant"]) == {"ant": 3, "cat": 1}
    assert main_class_map(root, 2, None) is None  # sorted folder order
    with pytest.raises(DataError, match="does not know: ant"):
        main_class_map(root, 2, ["cat", "dog"])
    wnids = imagenet_wnids()
    imagenet = make_image_folder(tmp_path / "in", {wnids[5]: 1, wnids[900]: 1})
    assert main_class_map(imagenet, 1000, None) == {wnids[5]: 5, wnids[900]: 900}


def test_validate_cli_errors(tmp_path, capsys):
    data = _tiny_val(tmp_path)
    common = ["--model", "fastvit_t8", "--image-size", "64", "--workers", "0"]
    assert cli_main(["validate", *common, "--data", str(tmp_path / "nowhere")]) == 2
    assert "fastvit validate: error: dataset folder" in capsys.readouterr().err
    assert cli_main(["validate", *common, "--data", str(data), "--num-classes", "5"]) == 2
    assert "has 3 class folders but the model predicts 5" in capsys.readouterr().err
    assert cli_main(["validate", *common]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_validate_cli_robustness_sets(tmp_path):
    wnids, a_wnids = imagenet_wnids(), subset_wnids("imagenet-a")
    make_image_folder(tmp_path / "a", {a_wnids[0]: 1, a_wnids[1]: 1}, size=(40, 40))
    make_image_folder(tmp_path / "c" / "fog" / "2", {wnids[3]: 1}, size=(40, 40))
    out = tmp_path / "robust.json"
    spec = f"imagenet-a={tmp_path / 'a'},imagenet-c={tmp_path / 'c'}"
    assert cli_main(["validate", "--model", "fastvit_t8", "--robustness", spec,
                     "--image-size", "64", "--workers", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_classes"] == 1000
    assert result["sets"]["imagenet-a"]["num_classes"] == 200
    assert result["sets"]["imagenet-a"]["count"] == 2
    assert set(result["imagenet-c"]["corruptions"]["fog"]["errors"]) == {"2"}


# -- torchrun: sharded validation equals one process -------------------------------------------


def _run(cmd: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# 12 s on 2 idle cores (three interpreter start-ups); up to ~45 s on a crowded machine.
@pytest.mark.slow
def test_torchrun_two_process_validate_equals_single_process(tmp_path):
    from fastvit import create_model
    from fastvit.checkpoints import save_checkpoint

    data = _tiny_val(tmp_path, counts=(3, 2, 2))  # 7 images: uneven shards
    torch.manual_seed(123)
    ckpt = save_checkpoint(create_model("fastvit_t8", num_classes=3), tmp_path / "m.safetensors")
    args = ["validate", "--model", "fastvit_t8", "--checkpoint", str(ckpt),
            "--data", str(data), "--image-size", "64", "--workers", "0", "--batch-size", "2",
            "--device", "cpu"]
    assert cli_main([*args, "--json", str(tmp_path / "single.json")]) == 0
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
          "-m", "fastvit", *args, "--json", "sharded.json"], tmp_path)
    single = json.loads((tmp_path / "single.json").read_text())
    sharded = json.loads((tmp_path / "sharded.json").read_text())
    assert sharded["world_size"] == 2 and single["world_size"] == 1
    s, d = single["sets"]["val"], sharded["sets"]["val"]
    assert d["count"] == s["count"] == 7
    assert d["top1"] == s["top1"] and d["top5"] == s["top5"]
    assert np.isclose(d["loss"], s["loss"], rtol=1e-5, atol=0)
    # the per-sample analysis gathers every shard: the same report as one process
    assert sharded["analysis"]["per_class"] == single["analysis"]["per_class"]
    assert sharded["analysis"]["confusion_matrix"] == single["analysis"]["confusion_matrix"]
