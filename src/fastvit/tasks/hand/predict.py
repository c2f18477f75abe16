"""Hand meshes of a trained regressor on images (``fastvit hand predict``), or the
FreiHAND evaluation split as a Codalab submission file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fastvit.errors import DataError
from fastvit.files import write_json
from fastvit.run.worker_errors import clean_worker_error
from fastvit.tasks.hand.data import FreiHandDataset, ImageListDataset
from fastvit.tasks.hand.engine import LoadedHandMesh
from fastvit.tasks.hand.model import decode_mesh
from fastvit.tasks.hand.report import examples_from_batch, save_examples_png
from fastvit.tasks.inputs import input_images

OUTPUTS = ("joints_3d", "vertices", "joints_2d", "vertices_2d", "pose", "shape", "camera")


@torch.no_grad()
def _predict(loaded: LoadedHandMesh, dataset: Dataset, batch_size: int, workers: int,
             num_examples: int = 0) -> tuple[list[dict[str, torch.Tensor]], list[dict]]:
    """Per-image predictions (root-relative metres, [-1, 1] image units) and up to
    ``num_examples`` drawable examples."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    out: list[dict[str, torch.Tensor]] = []
    examples: list[dict] = []
    try:
        for batch in loader:
            params = loaded.model(batch["image"].to(loaded.device))
            pred = decode_mesh(params, loaded.mano, loaded.recipe.mano.root_joint)
            if len(examples) < num_examples:
                examples += examples_from_batch(batch, pred, num_examples - len(examples))
            out += [{k: pred[k][i].cpu() for k in OUTPUTS}
                    for i in range(batch["image"].shape[0])]
    except DataError as err:
        raise clean_worker_error(err) from None
    return out, examples


def predict_hand_meshes(loaded: LoadedHandMesh, inputs: Sequence[str | os.PathLike],
                        out_dir: str | os.PathLike, *, batch_size: int = 32, workers: int = 2,
                        num_examples: int = 8) -> list[dict[str, Any]]:
    """Meshes for ``inputs`` (image files, folders, glob patterns: FreiHAND-style crops of
    one right hand); writes ``OUT/predictions.json`` and (``num_examples`` > 0)
    ``OUT/examples.png``, and returns one record per image in order."""
    out_dir, recipe = Path(out_dir), loaded.recipe
    paths = input_images(inputs)
    preds, examples = _predict(loaded, ImageListDataset(paths, recipe.data.image_size),
                               batch_size, workers, num_examples)
    records = [{"image": str(path), "camera": p["camera"].tolist(),
                "pose": p["pose"].tolist(), "shape": p["shape"].tolist(),
                "joints_3d": p["joints_3d"].tolist(),
                "joints_2d_normalized": p["joints_2d"].tolist(),
                "vertices": p["vertices"].tolist()}
               for path, p in zip(paths, preds, strict=True)]
    write_json(out_dir / "predictions.json", {
        "model": recipe.model.variant,
        "units": {"joints_3d": f"metres, relative to joint {recipe.mano.root_joint}",
                  "joints_2d_normalized": "[-1, 1] of the image width/height"},
        "joint_order": "FreiHAND (wrist, thumb, index, middle, ring, little)",
        "predictions": records})
    if examples:
        save_examples_png(out_dir / "examples.png", examples, loaded.mano.faces.cpu(),
                          recipe.data.image_size, title=f"{recipe.model.variant} predictions")
    return records


def predict_freihand_submission(loaded: LoadedHandMesh, freihand: str | os.PathLike,
                                out_dir: str | os.PathLike, *, batch_size: int = 32,
                                workers: int = 2) -> list[dict[str, list]]:
    """Meshes for the FreiHAND evaluation split, written as the Codalab submission file
    ``OUT/pred.json`` ([joints list, vertices list], root-relative metres: the server's
    aligned scores are the ones that apply); returns ``joints_3d`` and ``vertices`` per
    image in the split's order."""
    dataset = FreiHandDataset(freihand, "evaluation", input_size=loaded.recipe.data.image_size,
                              require_targets=False)
    preds, _ = _predict(loaded, dataset, batch_size, workers)
    records = [{"joints_3d": p["joints_3d"].tolist(), "vertices": p["vertices"].tolist()}
               for p in preds]
    write_json(Path(out_dir) / "pred.json", [[r["joints_3d"] for r in records],
                                             [r["vertices"] for r in records]])
    return records
