"""int8 of an embedding model (a MobileCLIP image tower): judged by the cosine similarity
of its int8 and fp32 embeddings and by nearest-neighbour agreement, not by top-1.

One ONNX int8 quantization through ``fastvit export --int8`` of MCi0 cut to one block per
stage (random weights, 64 px, images made here), shared by the tests of this module. The
report is recomputed from the written files' own outputs with code of this module, not
the reporting code, so a report that does not describe the files fails.

A randomly initialized tower maps every image to nearly the same embedding (measured:
pairwise cosine > 0.99999 on these images), so nearest neighbours would be decided by
rounding. The test tower's projection bias is set to centre its features on the test
images, which spreads the fp32 embeddings out (pairwise cosine from about -0.8 to 0.7)
as a trained tower's are. What tells the images apart still sits in feature differences
of about 2e-4 of the features' size, below int8's resolution: the int8 file keeps little
of it (measured: cosine mean 0.02, nearest-neighbour agreement 25%), so this module checks
the report and its gates, not int8's quality on a trained tower (not downloadable here).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastvit import save_checkpoint
from fastvit.cli import main as cli
from fastvit.data import load_rgb
from fastvit.deploy.calibration import (
    RETRIEVAL_AGREEMENT,
    Int8Sets,
    check_gates,
    embedding_agreement,
    is_embedding_model,
    score_int8,
)
from fastvit.deploy.onnx_runtime import ort_session
from fastvit.deploy.quantize import quantize_int8
from fastvit.deploy.verification import ExportVerificationError
from fastvit.errors import ConfigError
from fastvit.models import VARIANTS, randomize_model_stats
from fastvit.pipeline import RANDOM_WEIGHTS, Loaded, eval_transform
from tests.helpers.shallow import one_block_per_stage, one_block_per_stage_spec

SIZE = 64
TOWER = "fastvit_mci0"
pytestmark = pytest.mark.usefixtures("one_thread")


def write_images(root: Path, classes: int, per_class: int, seed: int) -> Path:
    """``root/c<k>/<i>.png``: smooth colour gradients with a bright square, all different."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:72, 0:80] / 80.0
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a, b, c = rng.uniform(-1, 1, (3, 3))
            pixels = 128 + 100 * np.tanh(a[:, None, None] * xs + b[:, None, None] * ys + c[
                :, None, None])
            y, x = rng.integers(0, 50, 2)
            pixels[:, y:y + 20, x:x + 20] = rng.uniform(0, 255, (3, 1, 1))
            Image.fromarray(pixels.transpose(1, 2, 0).astype(np.uint8)).save(
                root / f"c{k}" / f"{i}.png")
    return root


def tower_loaded() -> Loaded:
    model = one_block_per_stage(TOWER).eval()
    return Loaded(model, TOWER, dict(model.pretrained_cfg), None, RANDOM_WEIGHTS)


def spread_tower(path: Path, folders: list[Path]) -> Path:
    """A one-block-per-stage MCi0 (random weights and statistics) whose ``head.fc`` bias
    centres its pooled features on the images of ``folders``; saved to ``path``."""
    torch.manual_seed(0)  # the initial weights: the measured numbers above
    model = randomize_model_stats(one_block_per_stage(TOWER), seed=0).eval()
    transform = eval_transform(dict(model.pretrained_cfg), SIZE)
    x = torch.stack([transform(load_rgb(f)) for d in folders for f in sorted(d.glob("*/*"))])
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        model.head.fc.bias.copy_(-model.head.fc.weight @ features.mean(0))
    return save_checkpoint(model, path, variant=TOWER)


@pytest.fixture(scope="module")
def tower_int8(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("tower_int8")
    calibration = write_images(folder / "calibration", 2, 4, seed=0)
    scored = write_images(folder / "scored", 2, 6, seed=1)
    out = folder / "tower.onnx"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setitem(VARIANTS, TOWER, one_block_per_stage_spec(TOWER))
        weights = spread_tower(folder / "tower.safetensors", [calibration, scored])
        code = cli(["export", "--checkpoint", str(weights), "--format", "onnx", "--image-size",
                    str(SIZE),
                    "--output", str(out), "--int8", "--calibration", str(calibration),
                    "--eval", str(scored), "--min-cosine", "-1"])
    assert code == 0
    return {"fp32": out, "report": json.loads(out.with_name("tower.int8.json").read_text()),
            "printed": printed.getvalue(), "calibration": calibration, "scored": scored}


def file_embeddings(path: Path, images: list[torch.Tensor]) -> np.ndarray:
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return np.stack([session.run(None, {name: x.unsqueeze(0).numpy()})[0][0] for x in images])


def test_tower_int8_is_judged_by_embeddings(tower_int8) -> None:
    report = tower_int8["report"]
    assert report["output"] == "embedding" and report["embedding_dim"] == 512
    assert "top1_agreement" not in report and "fp32_top1" not in report
    assert report["images"] == 12 and report["calibration_images"] == 8
    assert report["retrieval_agreement_is"] == RETRIEVAL_AGREEMENT
    assert -1.0 <= report["cosine_min"] <= report["cosine_mean"] <= 1.0
    assert 0.0 <= report["retrieval_agreement"] <= 1.0
    assert "embedding cosine mean" in tower_int8["printed"]
    assert "nearest-neighbour agreement" in tower_int8["printed"]


def test_reported_cosine_and_neighbours_are_what_the_files_output(tower_int8) -> None:
    transform = eval_transform(dict(one_block_per_stage(TOWER).pretrained_cfg), SIZE)
    files = sorted(tower_int8["scored"].glob("*/*.png"))
    images = [transform(load_rgb(f)) for f in files]
    fp32 = file_embeddings(tower_int8["fp32"], images)
    int8 = file_embeddings(Path(tower_int8["report"]["int8"]), images)
    cosines, same = [], []
    for i in range(len(files)):
        cosines.append(float(fp32[i] @ int8[i] / np.linalg.norm(fp32[i]) / np.linalg.norm(
            int8[i])))
        others = [j for j in range(len(files)) if j != i]

        def nearest(query: np.ndarray, others=others) -> int:
            scores = [float(query @ fp32[j] / np.linalg.norm(query) / np.linalg.norm(fp32[j]))
                      for j in others]
            return others[int(np.argmax(scores))]
        same.append(nearest(fp32[i]) == nearest(int8[i]))
    report = tower_int8["report"]
    assert report["cosine_mean"] == pytest.approx(np.mean(cosines), abs=1e-6)
    assert report["cosine_min"] == pytest.approx(min(cosines), abs=1e-6)
    assert report["retrieval_agreement"] == pytest.approx(np.mean(same), abs=1e-9)
    assert min(cosines) < 1 - 1e-6  # int8 does change the embeddings...
    assert not all(same)  # ...and some neighbours: a faked agreement of 1.0 would fail


def test_gates_failing_write_nothing(tower_int8, tmp_path) -> None:
    fp32 = tmp_path / "t.onnx"
    shutil.copy(tower_int8["fp32"], fp32)
    loaded = tower_loaded()
    with pytest.raises(ExportVerificationError, match="below --min-cosine 1.01"):
        quantize_int8(loaded, fp32, tower_int8["calibration"], calibration_size=4,
                      min_cosine=1.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]
    # --min-agreement gates the nearest-neighbour agreement (the same check as above)
    sets = Int8Sets(None, [], [], None, "3 images")
    fp32_out = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    int8_out = np.array([[1.0, 0.01], [0.9, 0.12], [1.0, -0.2]])
    with pytest.raises(ExportVerificationError, match="nearest neighbour on 66.7% of 3 images"
                                                      ", below --min-agreement 70.0%"):
        score_int8(fp32_out, int8_out, sets, embedding=True, min_agreement=0.7,
                   min_cosine=None)
    assert score_int8(fp32_out, int8_out, sets, embedding=True, min_agreement=0.6,
                      min_cosine=-1)["retrieval_agreement"] == pytest.approx(2 / 3)


def test_which_models_are_embedding_models() -> None:
    tower = tower_loaded()
    assert is_embedding_model(tower)
    tower.class_names = ["cat", "dog"]  # fine-tuned as a classifier: top-1 again
    assert not is_embedding_model(tower)
    paper = Loaded(one_block_per_stage("fastvit_t8"), "fastvit_t8", {}, None, RANDOM_WEIGHTS)
    assert not is_embedding_model(paper)
    with pytest.raises(ConfigError, match="--min-cosine is for embedding models"):
        check_gates(paper, 0.99)


def test_nearest_neighbour_agreement_definition() -> None:
    fp32 = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    # image 2's int8 embedding leans to image 0 instead of image 1: its neighbour changes
    int8 = np.array([[1.0, 0.01], [0.9, 0.12], [1.0, -0.2]])
    report = embedding_agreement(fp32, int8)
    assert report["retrieval_agreement"] == pytest.approx(2 / 3)
    assert report["cosine_min"] == pytest.approx(-0.2 / np.hypot(1.0, 0.2))
    assert embedding_agreement(fp32[:1], int8[:1])["retrieval_agreement"] is None
