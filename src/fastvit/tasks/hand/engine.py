"""Train, load and evaluate the FreiHAND hand-mesh regressor (prediction: :mod:`.predict`).

The run itself (AMP, DDP, resumable data order, checkpoints, tqdm) is the
shared one (:func:`fastvit.run.training.train_task`); this module supplies
the model, the data, the loss and the benchmark evaluation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from fastvit.errors import DataError
from fastvit.run.device import autocast, resolve_amp
from fastvit.run.distributed import DistEnv
from fastvit.run.evaluation import evaluation_mode
from fastvit.run.loop import StepOutput
from fastvit.run.lr_schedule import LrSchedule
from fastvit.run.recipes import stored_recipe
from fastvit.run.store import load_run_checkpoint, resolve_trained
from fastvit.run.training import TaskSpec, train_task
from fastvit.run.worker_errors import clean_worker_error
from fastvit.tasks.hand.data import Augmentation, FreiHandDataset
from fastvit.tasks.hand.losses import LossWeights, hand_mesh_loss
from fastvit.tasks.hand.mano import ManoLayer, build_mano_layer
from fastvit.tasks.hand.metrics import HandMeshMeter, sample_metrics
from fastvit.tasks.hand.model import HandMeshNet, decode_mesh
from fastvit.tasks.hand.recipe import DEFAULT_RECIPE, HandRecipe
from fastvit.tasks.hand.report import examples_from_batch, write_report
from fastvit.tasks.shared import eval_loader, run_settings, task_header

TASK = "hand"
log = logging.getLogger(__name__)


# -- builders shared by the three commands --------------------------------------------


def build_net(recipe: HandRecipe, pretrained: str | Path | None = None) -> HandMeshNet:
    head = recipe.head
    return HandMeshNet(recipe.model.variant, pretrained, hidden=head.hidden,
                       iterations=head.iterations, dropout=head.dropout,
                       camera_scale_init=head.camera_scale_init,
                       frozen_stages=recipe.backbone.frozen_stages,
                       norm_eval=recipe.backbone.norm_eval,
                       drop_path_rate=recipe.model.drop_path)


def build_mano(recipe: HandRecipe, mano_path: str | os.PathLike) -> ManoLayer:
    return build_mano_layer(mano_path, flat_hand_mean=recipe.mano.flat_hand_mean,
                            fingertip_vertex_ids=tuple(recipe.mano.fingertip_vertex_ids))


def loss_weights(recipe: HandRecipe) -> LossWeights:
    w = recipe.loss
    return LossWeights(w.joints_3d, w.vertices_3d, w.joints_2d, w.pose, w.shape)


@dataclass(frozen=True)
class LoadedHandMesh:
    """A trained hand-mesh regressor in eval mode, with what it was trained with and the
    MANO layer that turns its parameters into a mesh."""

    model: HandMeshNet
    recipe: HandRecipe
    metadata: dict  # variant
    device: torch.device
    mano: ManoLayer


def load_hand_mesh(checkpoint: str | os.PathLike, device: torch.device | str = "cpu", *,
                   mano_path: str | os.PathLike) -> LoadedHandMesh:
    """Rebuild a ``fastvit hand train`` model from its checkpoint (a file, or a run folder:
    its ``best.pt``, else its newest checkpoint), with the MANO layer of ``mano_path``."""
    path = resolve_trained(checkpoint)
    state = load_run_checkpoint(path, TASK)
    recipe = stored_recipe(HandRecipe, state["config"], DEFAULT_RECIPE, "tasks", str(path))
    net = build_net(recipe)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise DataError(f"{path} does not match a {recipe.model.variant} hand model: "
                        f"{str(err).splitlines()[0]}") from None
    device = torch.device(device)
    mano = build_mano(recipe, mano_path).to(device)
    return LoadedHandMesh(net.to(device).eval(), recipe, dict(state.get("metadata", {})),
                          device, mano)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def eval_dataset(data: str | os.PathLike, split: str, recipe: HandRecipe) -> FreiHandDataset:
    """A FreiHAND split as scored: the evaluation split has one version of each image."""
    return FreiHandDataset(data, split, input_size=recipe.data.image_size,
                           versions=(0,) if split == "evaluation" else recipe.data.versions)


# -- evaluation ------------------------------------------------------------------------


@torch.no_grad()
def evaluate_hand_mesh(model: torch.nn.Module, dataset: Dataset, env: DistEnv, *,
                       mano: ManoLayer, batch_size: int, workers: int = 0, root: int = 9,
                       amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Benchmark metrics (PA-MPJPE, PA-MPVPE, F-scores) over ``dataset``, sharded across
    ranks with exact totals."""
    loader = eval_loader(dataset, batch_size, workers, env)
    meter = HandMeshMeter()
    with evaluation_mode(model) as net:
        try:
            for batch in loader:
                batch = to_device(batch, env.device)
                with autocast(env.device, amp_dtype):
                    params = net(batch["image"])
                pred = decode_mesh(params, mano, root)
                meter.update(sample_metrics(pred["joints_3d"], batch["joints_3d"],
                                            pred["vertices"], batch["vertices"], root=root))
        except DataError as err:
            raise clean_worker_error(err) from None
    meter.all_reduce(env.device)
    return meter.compute()


@torch.no_grad()
def example_predictions(model: torch.nn.Module, dataset: Dataset, *, mano: ManoLayer,
                        count: int, device: torch.device, root: int = 9,
                        amp_dtype: torch.dtype | None = None) -> list[dict]:
    """What :func:`~fastvit.tasks.hand.report.save_examples_png` draws for the first
    ``count`` samples of ``dataset``: predicted mesh and keypoints, and the ground truth."""
    count = min(count, len(dataset))
    if count <= 0:
        return []
    batch = to_device(default_collate([dataset[i] for i in range(count)]), device)
    with evaluation_mode(model) as net, autocast(device, amp_dtype):
        pred = decode_mesh(net(batch["image"]), mano, root)
    return examples_from_batch(batch, pred, count)


# -- training --------------------------------------------------------------------------


def lr_schedule(recipe: HandRecipe, total_steps: int) -> LrSchedule:
    """Linear warmup from ``warmup_ratio`` x lr over ``warmup_iters`` steps (at most half
    the run), multiplied into a cosine decay to ``min_lr_ratio`` x lr over the run."""
    s = recipe.schedule
    return LrSchedule("cosine", main_steps=total_steps, min_ratio=s.min_lr_ratio,
                      warmup_steps=min(s.warmup_iters, total_steps // 2),
                      warmup_start=s.warmup_ratio)


def train(recipe: HandRecipe, *, data: str | os.PathLike, mano_path: str | os.PathLike,
          out_dir: str | os.PathLike, device: str | None = None,
          resume: str | os.PathLike | None = None, eval_split: str | None = "evaluation",
          max_steps: int | None = None, num_examples: int = 8,
          threads: int | None = None, compiled: bool = False) -> dict[str, Any]:
    """Train on ``ROOT/training``; evaluates on ``eval_split`` every few epochs when its
    ground truth is present. Writes ``ckpt_step*.pt``, ``best.pt`` (lowest PA-MPJPE),
    ``metrics.jsonl``, ``metrics.json`` (the run report), ``loss.png`` and (with an
    eval split) ``evaluation.json`` + ``examples.png`` of the last evaluation."""
    recipe.validate()
    out_dir, aug = Path(out_dir), recipe.augment
    augment = Augmentation(aug.scale, aug.rotation, aug.translate, aug.color)
    train_set = FreiHandDataset(data, "training", input_size=recipe.data.image_size,
                                versions=recipe.data.versions, augment=augment)
    eval_set = _optional_eval_set(data, eval_split, recipe)
    last: dict[str, Any] = {}

    def build(env: DistEnv, fresh: bool) -> TaskSpec:
        mano = build_mano(recipe, mano_path).to(env.device)
        net = build_net(recipe, recipe.model.pretrained)
        weights, root = loss_weights(recipe), recipe.mano.root_joint
        amp_dtype = resolve_amp(recipe.run.amp, env.device)

        def step(model: torch.nn.Module, batch: dict[str, Any]) -> StepOutput:
            batch = to_device(batch, env.device)
            pred = decode_mesh(model(batch["image"]), mano, root)
            return StepOutput(hand_mesh_loss(pred, batch, weights, root),
                              batch["image"].shape[0])

        def run_eval(model: torch.nn.Module) -> dict[str, float]:
            metrics = evaluate_hand_mesh(model, eval_set, env, mano=mano,
                                         batch_size=recipe.data.batch_size,
                                         workers=recipe.data.workers,
                                         root=root, amp_dtype=amp_dtype)
            examples = (example_predictions(model, eval_set, mano=mano, count=num_examples,
                                            device=env.device, root=root, amp_dtype=amp_dtype)
                        if env.is_main else [])
            last.update(metrics=metrics, examples=examples, faces=mano.faces.cpu(), env=env)
            return metrics

        return TaskSpec(net, train_set, step, lambda per_epoch, total: lr_schedule(
                            recipe, total), recipe.optim.lr, recipe.optim.weight_decay,
                        metadata={"variant": recipe.model.variant},
                        epochs=recipe.schedule.epochs,
                        collate_fn=default_collate,
                        evaluate=run_eval if eval_set is not None else None,
                        score=lambda m: -m["pa_mpjpe_mm"],
                        eval_every_epochs=recipe.run.eval_every,
                        header=[task_header(TASK, recipe, len(train_set), env, "samples")],
                        plot_metrics={"PA-MPJPE (mm)": "pa_mpjpe_mm",
                                      "PA-MPVPE (mm)": "pa_mpvpe_mm"},
                        plot_title=f"FreiHAND {eval_split}")

    result = train_task(TASK, recipe, run_settings(recipe, out_dir=out_dir, device=device,
                                                   resume=resume, max_steps=max_steps,
                                                   threads=threads, compiled=compiled), build)
    if last and last["env"].is_main:
        report = {"split": eval_split, "checkpoint": result["checkpoint"],
                  "model": recipe.model.variant, "metrics": last["metrics"]}
        result["metrics"] = last["metrics"]
        result["files"] = write_report(out_dir, report, last["examples"], last["faces"],
                                       recipe.data.image_size, name="evaluation.json")
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
    return eval_dataset(data, split, recipe)
