"""Train, evaluate and predict with the FreiHAND hand-mesh regressor.

The loop itself (AMP, DDP, warm-up, checkpoints, tqdm) is the shared one in
:mod:`fastvit.tasks.common`; this module supplies the model, the data, the
loss and the benchmark evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from fastvit.errors import ConfigError, DataError
from fastvit.tasks import common
from fastvit.tasks.hand.data import Augmentation, FreiHandDataset, ImageListDataset
from fastvit.tasks.hand.losses import LossWeights, hand_mesh_loss
from fastvit.tasks.hand.mano import ManoLayer, build_mano_layer
from fastvit.tasks.hand.metrics import HandMeshMeter, sample_metrics
from fastvit.tasks.hand.model import HandMeshNet, decode_mesh
from fastvit.tasks.hand.recipe import HandRecipe
from fastvit.tasks.hand.report import examples_from_batch, save_examples_png, write_report

TASK = "hand"


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


def recipe_from_checkpoint(state: dict) -> HandRecipe:
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in state["recipe"].items()}
    names = {f.name for f in dataclasses.fields(HandRecipe)}
    return HandRecipe(**{k: v for k, v in values.items() if k in names})


def load_trained(checkpoint: str | os.PathLike, mano_path: str | os.PathLike,
                 device: torch.device) -> tuple[HandRecipe, HandMeshNet, ManoLayer]:
    """Network (eval mode) and MANO layer from a ``fastvit hand train`` checkpoint."""
    state = common.load_task_checkpoint(checkpoint, TASK)
    recipe = recipe_from_checkpoint(state)
    net = build_net(recipe)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise DataError(f"{checkpoint} does not match a {recipe.model} hand model: "
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
def evaluate_model(net: torch.nn.Module, mano: ManoLayer, dataset: Dataset,
                   runtime: common.Runtime, *, batch_size: int, workers: int = 0,
                   root: int = 9, amp: bool = False, num_examples: int = 0
                   ) -> tuple[dict[str, float], list[dict]]:
    """Benchmark metrics over ``dataset`` (sharded across ranks, exact totals) and
    up to ``num_examples`` visual examples from rank 0."""
    was_training = net.training
    net.eval()
    loader = common.eval_loader(dataset, batch_size, workers, runtime)
    meter, examples = HandMeshMeter(), []
    try:
        for batch in loader:
            batch = to_device(batch, runtime.device)
            with common.autocast(runtime.device, amp):
                params = net(batch["image"])
            pred = decode_mesh(params, mano, root)
            meter.update(sample_metrics(pred["joints_3d"], batch["joints_3d"],
                                        pred["vertices"], batch["vertices"], root=root))
            if runtime.is_main and len(examples) < num_examples:
                examples += examples_from_batch(batch, pred, num_examples - len(examples))
    except DataError as err:
        raise common.clean_worker_error(err) from None
    finally:
        net.train(was_training)
    meter.all_reduce(runtime.device)
    return meter.compute(), examples


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike,
             mano_path: str | os.PathLike, *, split: str = "evaluation",
             out_dir: str | os.PathLike | None = None, device: str | None = None,
             batch_size: int = 32, workers: int = 4, num_examples: int = 8) -> dict[str, Any]:
    """Score a checkpoint on a FreiHAND split; writes metrics.json + examples PNG."""
    runtime = common.init_runtime(device)
    try:
        recipe, net, mano = load_trained(checkpoint, mano_path, runtime.device)
        dataset = _eval_dataset(data, split, recipe)
        metrics, examples = evaluate_model(net, mano, dataset, runtime, batch_size=batch_size,
                                           workers=workers, root=recipe.root_joint,
                                           num_examples=num_examples)
        result = {"split": split, "checkpoint": str(checkpoint), "model": recipe.model,
                  "metrics": metrics}
        if out_dir is not None and runtime.is_main:
            result["files"] = write_report(out_dir, result, examples, mano.faces.cpu(),
                                           recipe.input_size)
        return result
    finally:
        common.shutdown(runtime)


# -- training --------------------------------------------------------------------------


def cosine_schedule(optimizer: torch.optim.Optimizer, total: int, min_ratio: float) -> LambdaLR:
    """Cosine decay from lr to ``lr * min_ratio`` over ``total`` iterations."""
    def factor(step: int) -> float:
        progress = min(step, total) / max(total, 1)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def train(recipe: HandRecipe, *, data: str | os.PathLike, mano_path: str | os.PathLike,
          out_dir: str | os.PathLike, device: str | None = None,
          resume: str | os.PathLike | None = None, eval_split: str | None = "evaluation",
          max_steps: int | None = None, num_examples: int = 8) -> dict[str, Any]:
    """Train on ``ROOT/training``; evaluates on ``eval_split`` every few epochs when its
    ground truth is present. Writes ``checkpoint.pt``, ``history.json``,
    ``loss.png`` and (with an eval split) ``metrics.json`` + ``examples.png``."""
    runtime = common.init_runtime(device)
    out_dir = Path(out_dir)
    try:
        torch.manual_seed(recipe.seed + runtime.rank)
        random.seed(recipe.seed + runtime.rank)
        mano = build_mano(recipe, mano_path).to(runtime.device)
        augment = Augmentation(recipe.aug_scale, recipe.aug_rotation, recipe.aug_translate,
                               recipe.aug_color)
        train_set = FreiHandDataset(data, "training", input_size=recipe.input_size,
                                    versions=recipe.versions, augment=augment)
        eval_set = _optional_eval_set(data, eval_split, recipe)
        net = build_net(recipe, recipe.pretrained).to(runtime.device)
        model = common.wrap_ddp(net, runtime)
        optimizer = common.adamw(net, recipe.lr, recipe.weight_decay)
        loader = common.train_loader(train_set, recipe.batch_size, recipe.workers, runtime,
                                     seed=recipe.seed)
        steps_per_epoch = len(loader)
        total = recipe.epochs * steps_per_epoch if max_steps is None else int(max_steps)
        if total <= 0:
            raise ConfigError(f"nothing to train: {total} steps")
        scheduler = common.with_warmup(
            optimizer, cosine_schedule(optimizer, total, recipe.min_lr_ratio),
            min(recipe.warmup_iters, total // 2), recipe.warmup_ratio)
        scaler = common.make_scaler(runtime.device, recipe.amp)
        start, evaluations = 0, []
        if resume is not None:
            state = common.load_task_checkpoint(resume, TASK)
            start = common.restore_training_state(state, net, optimizer, scheduler, scaler)
            evaluations = list(state.get("extra", {}).get("evaluations", []))
        weights, root = loss_weights(recipe), recipe.root_joint
        ckpt_path = out_dir / "checkpoint.pt"

        def step_fn(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            batch = to_device(batch, runtime.device)
            pred = decode_mesh(model(batch["image"]), mano, root)
            return hand_mesh_loss(pred, batch, weights, root)

        def on_step_end(step: int) -> None:
            epoch_end = step % steps_per_epoch == 0 or step == total
            if not epoch_end:
                return
            epoch = math.ceil(step / steps_per_epoch)
            # the last step is scored once, after training (with the report examples)
            if eval_set is not None and epoch % recipe.eval_every_epochs == 0 and step < total:
                metrics, _ = evaluate_model(net, mano, eval_set, runtime,
                                            batch_size=recipe.batch_size,
                                            workers=recipe.workers, root=root, amp=recipe.amp)
                evaluations.append({"step": step, "epoch": epoch, **metrics})
            if runtime.is_main:
                common.save_task_checkpoint(
                    ckpt_path, task=TASK, model=net, recipe=common.recipe_dict(recipe),
                    extra={"epoch": epoch, "evaluations": evaluations}, optimizer=optimizer,
                    scheduler=scheduler, scaler=scaler, step=step)

        history = common.fit(model, common.iterate_forever(loader, start // steps_per_epoch),
                             step_fn, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                             runtime=runtime, total_steps=total, start_step=start,
                             amp=recipe.amp, clip_grad=recipe.clip_grad,
                             log_every=recipe.log_every, on_step_end=on_step_end,
                             desc="hand train")
        result: dict[str, Any] = {"checkpoint": str(ckpt_path), "steps": total,
                                  "history": history, "evaluations": evaluations}
        if eval_set is not None:
            metrics, examples = evaluate_model(net, mano, eval_set, runtime,
                                               batch_size=recipe.batch_size,
                                               workers=recipe.workers, root=root,
                                               amp=recipe.amp, num_examples=num_examples)
            result["metrics"] = metrics
            evaluations.append({"step": total, "epoch": math.ceil(total / steps_per_epoch),
                                **metrics})
        if runtime.is_main:
            common.write_json(out_dir / "history.json", {"history": history,
                                                         "evaluations": evaluations})
            common.plot_history(history, out_dir / "loss.png", f"{recipe.model} FreiHAND")
            if eval_set is not None:
                report = {"split": eval_split, "checkpoint": str(ckpt_path),
                          "model": recipe.model, "metrics": result["metrics"]}
                result["files"] = write_report(out_dir, report, examples, mano.faces.cpu(),
                                               recipe.input_size)
        common.barrier(runtime)
        return result
    finally:
        common.shutdown(runtime)


def _optional_eval_set(data: str | os.PathLike, split: str | None, recipe: HandRecipe
                       ) -> FreiHandDataset | None:
    """The evaluation split when asked for and its 3D ground truth exists."""
    if split is None:
        return None
    root = Path(data)
    needed = [root / f"{split}_{k}.json" for k in ("K", "xyz", "verts")]
    if not all(p.is_file() for p in needed):
        missing = ", ".join(str(p) for p in needed if not p.is_file())
        print(f"fastvit hand train: no periodic evaluation ({missing} missing)")
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
    runtime = common.init_runtime(device)
    out_dir = Path(out_dir)
    recipe, net, mano = load_trained(checkpoint, mano_path, runtime.device)
    if freihand is not None:
        dataset: Dataset = FreiHandDataset(freihand, "evaluation", input_size=recipe.input_size,
                                           require_targets=False)
    else:
        paths = image_paths(inputs)
        dataset = ImageListDataset(paths, recipe.input_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    try:
        preds, examples = predict_batches(net, mano, loader, runtime.device,
                                          recipe.root_joint, num_examples)
    except DataError as err:
        raise common.clean_worker_error(err) from None
    files: dict[str, str] = {}
    if freihand is not None:
        pred_json = [[p["joints_3d"].tolist() for p in preds],
                     [p["vertices"].tolist() for p in preds]]
        files["pred"] = str(common.write_json(out_dir / "pred.json", pred_json))
        return {"num_images": len(preds), "files": files}
    records = []
    for path, p in zip(paths, preds, strict=True):
        records.append({"image": str(path), "camera": p["camera"].tolist(),
                        "pose": p["pose"].tolist(), "shape": p["shape"].tolist(),
                        "joints_3d": p["joints_3d"].tolist(),
                        "joints_2d_normalized": p["joints_2d"].tolist(),
                        "vertices": p["vertices"].tolist()})
    files["predictions"] = str(common.write_json(out_dir / "predictions.json", {
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
