"""Train, evaluate and predict with the FreiHAND hand-mesh regressor.

The run itself (AMP, DDP, resumable data order, checkpoints, tqdm) is the
shared one (:func:`fastvit.run.training.train_task`); this module supplies
the model, the data, the loss and the benchmark evaluation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from fastvit.errors import DataError
from fastvit.files import write_json
from fastvit.run.device import autocast, resolve_amp
from fastvit.run.distributed import DistEnv, cleanup, init_distributed
from fastvit.run.loop import StepOutput
from fastvit.run.lr_schedule import LrSchedule
from fastvit.run.recipes import stored_recipe
from fastvit.run.store import load_run_checkpoint, resolve_trained
from fastvit.run.training import TaskSpec, train_task
from fastvit.run.worker_errors import clean_worker_error
from fastvit.tasks.hand.data import Augmentation, FreiHandDataset, ImageListDataset
from fastvit.tasks.hand.losses import LossWeights, hand_mesh_loss
from fastvit.tasks.hand.mano import ManoLayer, build_mano_layer
from fastvit.tasks.hand.metrics import HandMeshMeter, sample_metrics
from fastvit.tasks.hand.model import HandMeshNet, decode_mesh
from fastvit.tasks.hand.recipe import DEFAULT_RECIPE, HandRecipe
from fastvit.tasks.hand.report import examples_from_batch, save_examples_png, write_report
from fastvit.tasks.shared import eval_loader, run_settings

TASK = "hand"
log = logging.getLogger(__name__)


# -- builders shared by the three commands --------------------------------------------


def build_net(recipe: HandRecipe, pretrained: str | Path | None = None) -> HandMeshNet:
    return HandMeshNet(recipe.model, pretrained, hidden=recipe.head_hidden,
                       iterations=recipe.head_iterations, dropout=recipe.head_dropout,
                       camera_scale_init=recipe.camera_scale_init,
                       frozen_stages=recipe.frozen_stages, norm_eval=recipe.norm_eval,
                       drop_path_rate=recipe.drop_path_rate)


def build_mano(recipe: HandRecipe, mano_path: str | os.PathLike) -> ManoLayer:
    return build_mano_layer(mano_path, flat_hand_mean=recipe.flat_hand_mean,
                            fingertip_vertex_ids=tuple(recipe.fingertip_vertex_ids))


def loss_weights(recipe: HandRecipe) -> LossWeights:
    return LossWeights(recipe.w_joints_3d, recipe.w_vertices_3d, recipe.w_joints_2d,
                       recipe.w_pose, recipe.w_shape)


def load_trained(checkpoint: str | os.PathLike, mano_path: str | os.PathLike,
                 device: torch.device) -> tuple[HandRecipe, HandMeshNet, ManoLayer]:
    """Network (eval mode) and MANO layer from a ``fastvit hand train`` checkpoint (a file,
    or a run folder: its ``best.pt``, else its newest checkpoint)."""
    path = resolve_trained(checkpoint)
    state = load_run_checkpoint(path, TASK)
    recipe = stored_recipe(HandRecipe, state["config"], DEFAULT_RECIPE, "tasks", str(path))
    net = build_net(recipe)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise DataError(f"{path} does not match a {recipe.model} hand model: "
                        f"{str(err).splitlines()[0]}") from None
    mano = build_mano(recipe, mano_path)
    return recipe, net.to(device).eval(), mano.to(device)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def _eval_dataset(data: str | os.PathLike, split: str, recipe: HandRecipe) -> FreiHandDataset:
    return FreiHandDataset(data, split, input_size=recipe.input_size,
                           versions=(0,) if split == "evaluation" else recipe.versions)


# -- evaluation ------------------------------------------------------------------------


@torch.no_grad()
def evaluate_model(net: torch.nn.Module, mano: ManoLayer, dataset: Dataset, env: DistEnv, *,
                   batch_size: int, workers: int = 0, root: int = 9,
                   amp_dtype: torch.dtype | None = None, num_examples: int = 0
                   ) -> tuple[dict[str, float], list[dict]]:
    """Benchmark metrics over ``dataset`` (sharded across ranks, exact totals) and
    up to ``num_examples`` visual examples from rank 0."""
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        net = net.module
    was_training = net.training
    net.eval()
    loader = eval_loader(dataset, batch_size, workers, env)
    meter, examples = HandMeshMeter(), []
    try:
        for batch in loader:
            batch = to_device(batch, env.device)
            with autocast(env.device, amp_dtype):
                params = net(batch["image"])
            pred = decode_mesh(params, mano, root)
            meter.update(sample_metrics(pred["joints_3d"], batch["joints_3d"],
                                        pred["vertices"], batch["vertices"], root=root))
            if env.is_main and len(examples) < num_examples:
                examples += examples_from_batch(batch, pred, num_examples - len(examples))
    except DataError as err:
        raise clean_worker_error(err) from None
    finally:
        net.train(was_training)
    meter.all_reduce(env.device)
    return meter.compute(), examples


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike,
             mano_path: str | os.PathLike, *, split: str = "evaluation",
             out_dir: str | os.PathLike | None = None, device: str | None = None,
             batch_size: int = 32, workers: int = 4, num_examples: int = 8) -> dict[str, Any]:
    """Score a checkpoint on a FreiHAND split; writes metrics.json + examples PNG."""
    env = init_distributed(device)
    try:
        recipe, net, mano = load_trained(checkpoint, mano_path, env.device)
        dataset = _eval_dataset(data, split, recipe)
        metrics, examples = evaluate_model(net, mano, dataset, env, batch_size=batch_size,
                                           workers=workers, root=recipe.root_joint,
                                           num_examples=num_examples)
        result = {"split": split, "checkpoint": str(checkpoint), "model": recipe.model,
                  "metrics": metrics}
        if out_dir is not None and env.is_main:
            result["files"] = write_report(out_dir, result, examples, mano.faces.cpu(),
                                           recipe.input_size)
        return result
    finally:
        cleanup()


# -- training --------------------------------------------------------------------------


def lr_schedule(recipe: HandRecipe, total_steps: int) -> LrSchedule:
    """Linear warmup from ``warmup_ratio`` x lr over ``warmup_iters`` steps (at most half
    the run), multiplied into a cosine decay to ``min_lr_ratio`` x lr over the run."""
    return LrSchedule("cosine", main_steps=total_steps, min_ratio=recipe.min_lr_ratio,
                      warmup_steps=min(recipe.warmup_iters, total_steps // 2),
                      warmup_start=recipe.warmup_ratio)


def train(recipe: HandRecipe, *, data: str | os.PathLike, mano_path: str | os.PathLike,
          out_dir: str | os.PathLike, device: str | None = None,
          resume: str | os.PathLike | None = None, eval_split: str | None = "evaluation",
          max_steps: int | None = None, num_examples: int = 8,
          threads: int | None = None, compiled: bool = False) -> dict[str, Any]:
    """Train on ``ROOT/training``; evaluates on ``eval_split`` every few epochs when its
    ground truth is present. Writes ``ckpt_step*.pt``, ``best.pt`` (lowest PA-MPJPE),
    ``metrics.jsonl``, ``metrics.json`` (the run report), ``loss.png`` and (with an
    eval split) ``evaluation.json`` + ``examples.png`` of the last evaluation."""
    out_dir = Path(out_dir)
    augment = Augmentation(recipe.aug_scale, recipe.aug_rotation, recipe.aug_translate,
                           recipe.aug_color)
    train_set = FreiHandDataset(data, "training", input_size=recipe.input_size,
                                versions=recipe.versions, augment=augment)
    eval_set = _optional_eval_set(data, eval_split, recipe)
    last: dict[str, Any] = {}

    def build(env: DistEnv, fresh: bool) -> TaskSpec:
        mano = build_mano(recipe, mano_path).to(env.device)
        net = build_net(recipe, recipe.pretrained)
        weights, root = loss_weights(recipe), recipe.root_joint
        amp_dtype = resolve_amp(recipe.amp, env.device)

        def step(model: torch.nn.Module, batch: dict[str, Any]) -> StepOutput:
            batch = to_device(batch, env.device)
            pred = decode_mesh(model(batch["image"]), mano, root)
            return StepOutput(hand_mesh_loss(pred, batch, weights, root),
                              batch["image"].shape[0])

        def run_eval(model: torch.nn.Module) -> dict[str, float]:
            metrics, examples = evaluate_model(model, mano, eval_set, env,
                                               batch_size=recipe.batch_size,
                                               workers=recipe.workers, root=root,
                                               amp_dtype=amp_dtype, num_examples=num_examples)
            last.update(metrics=metrics, examples=examples, faces=mano.faces.cpu(), env=env)
            return metrics

        return TaskSpec(net, train_set, step, lambda per_epoch, total: lr_schedule(
                            recipe, total), recipe.lr, recipe.weight_decay,
                        metadata={"variant": recipe.model}, epochs=recipe.epochs,
                        collate_fn=default_collate,
                        evaluate=run_eval if eval_set is not None else None,
                        score=lambda m: -m["pa_mpjpe_mm"],
                        eval_every_epochs=recipe.eval_every_epochs,
                        header=[f"fastvit {TASK} train: {recipe.model}, "
                                f"{len(train_set)} training samples, {env.world_size} "
                                f"process(es) x batch {recipe.batch_size}, lr {recipe.lr:g}"],
                        plot_metrics={"PA-MPJPE (mm)": "pa_mpjpe_mm",
                                      "PA-MPVPE (mm)": "pa_mpvpe_mm"},
                        plot_title=f"FreiHAND {eval_split}")

    result = train_task(TASK, recipe, run_settings(recipe, out_dir=out_dir, device=device,
                                                   resume=resume, max_steps=max_steps,
                                                   threads=threads, compiled=compiled), build)
    if last and last["env"].is_main:
        report = {"split": eval_split, "checkpoint": result["checkpoint"],
                  "model": recipe.model, "metrics": last["metrics"]}
        result["metrics"] = last["metrics"]
        result["files"] = write_report(out_dir, report, last["examples"], last["faces"],
                                       recipe.input_size, name="evaluation.json")
    return result


def _optional_eval_set(data: str | os.PathLike, split: str | None, recipe: HandRecipe
                       ) -> FreiHandDataset | None:
    """The evaluation split when asked for and its 3D ground truth exists."""
    if split is None:
        return None
    root = Path(data)
    needed = [root / f"{split}_{k}.json" for k in ("K", "xyz", "verts")]
    if not all(p.is_file() for p in needed):
        missing = ", ".join(str(p) for p in needed if not p.is_file())
        log.warning("fastvit hand train: no evaluation (%s missing)", missing)
        return None
    return _eval_dataset(data, split, recipe)


# -- prediction ------------------------------------------------------------------------


@torch.no_grad()
def predict_batches(net: HandMeshNet, mano: ManoLayer, loader: DataLoader,
                    device: torch.device, root: int, num_examples: int = 0
                    ) -> tuple[list[dict[str, Any]], list[dict]]:
    """Per-image predictions (root-relative metres, [-1, 1] image units) and up to
    ``num_examples`` drawable examples."""
    out, examples = [], []
    for batch in loader:
        params = net(batch["image"].to(device))
        pred = decode_mesh(params, mano, root)
        if len(examples) < num_examples:
            examples += examples_from_batch(batch, pred, num_examples - len(examples))
        for i in range(batch["image"].shape[0]):
            out.append({k: pred[k][i].cpu() for k in
                        ("joints_3d", "vertices", "joints_2d", "vertices_2d", "pose", "shape",
                         "camera")})
    return out, examples


def image_paths(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (sorted, image extensions only)."""
    from fastvit.data.datasets import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"input {item} does not exist")
    if not paths:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return paths


def predict(checkpoint: str | os.PathLike, mano_path: str | os.PathLike,
            inputs: Sequence[str | os.PathLike] = (), *, out_dir: str | os.PathLike,
            freihand: str | os.PathLike | None = None, device: str | None = None,
            batch_size: int = 32, workers: int = 2, num_examples: int = 8) -> dict[str, Any]:
    """Predict hand meshes for image files/folders (``predictions.json`` + ``examples.png``)
    or, with ``freihand=ROOT``, for the FreiHAND evaluation split as the Codalab
    submission file ``pred.json`` ([joints list, vertices list], root-relative metres:
    the server's aligned scores are the ones that apply)."""
    env = init_distributed(device)
    out_dir = Path(out_dir)
    recipe, net, mano = load_trained(checkpoint, mano_path, env.device)
    if freihand is not None:
        dataset: Dataset = FreiHandDataset(freihand, "evaluation", input_size=recipe.input_size,
                                           require_targets=False)
    else:
        paths = image_paths(inputs)
        dataset = ImageListDataset(paths, recipe.input_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    try:
        preds, examples = predict_batches(net, mano, loader, env.device,
                                          recipe.root_joint, num_examples)
    except DataError as err:
        raise clean_worker_error(err) from None
    files: dict[str, str] = {}
    if freihand is not None:
        pred_json = [[p["joints_3d"].tolist() for p in preds],
                     [p["vertices"].tolist() for p in preds]]
        files["pred"] = str(write_json(out_dir / "pred.json", pred_json))
        return {"num_images": len(preds), "files": files}
    records = []
    for path, p in zip(paths, preds, strict=True):
        records.append({"image": str(path), "camera": p["camera"].tolist(),
                        "pose": p["pose"].tolist(), "shape": p["shape"].tolist(),
                        "joints_3d": p["joints_3d"].tolist(),
                        "joints_2d_normalized": p["joints_2d"].tolist(),
                        "vertices": p["vertices"].tolist()})
    files["predictions"] = str(write_json(out_dir / "predictions.json", {
        "model": recipe.model, "units": {"joints_3d": "metres, relative to joint "
                                         f"{recipe.root_joint}", "joints_2d_normalized":
                                         "[-1, 1] of the image width/height"},
        "joint_order": "FreiHAND (wrist, thumb, index, middle, ring, little)",
        "predictions": records}))
    if examples:
        files["examples"] = str(save_examples_png(out_dir / "examples.png", examples,
                                                  mano.faces.cpu(), recipe.input_size,
                                                  title=f"{recipe.model} predictions"))
    return {"num_images": len(preds), "files": files}
