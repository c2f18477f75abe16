"""The demo's training part: fastvit_t8 learns scikit-learn's digits on the CPU.

Runs the packaged ``digits_t8`` recipe through the same :func:`fit` as
``fastvit train --data digits``, then takes the best checkpoint's EMA weights
(the recipe's selection rule), evaluates them on the held-out split,
reparameterizes the model and evaluates again: the fused model must make the
same predictions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

DEMO_RECIPE = "digits_t8"


def run(out_dir: str | Path, *, epochs: int | None = None, overrides: list[str] | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate, reparameterize, re-evaluate; write ``digits_metrics.json`` into ``out_dir``.

    ``epochs`` (default: the recipe's 5) and ``overrides`` (``["optim.lr=1e-3"]``)
    change the recipe. Returns a dict with ``top1`` (train-time form), ``top1_fused``,
    ``max_abs_logit_diff`` between the two forms, ``train_seconds`` and the
    paths of the checkpoint and the curves PNG.
    """
    from fastvit.data import build_digits, build_eval_loader
    from fastvit.evaluate import evaluate_classifier
    from fastvit.models import deploy_form, is_fused
    from fastvit.pipeline import load_model
    from fastvit.run.recipes import apply_overrides
    from fastvit.run.store import BEST_NAME, load_run_checkpoint
    from fastvit.train.config import load_recipe
    from fastvit.train.trainer import fit

    out_dir = Path(out_dir)
    cfg = load_recipe(DEMO_RECIPE)
    cfg.run.out_dir = str(out_dir / "digits_run")
    cfg.run.progress = False
    if epochs is not None:
        cfg.schedule.epochs = epochs
        cfg.schedule.warmup_epochs = min(cfg.schedule.warmup_epochs, epochs)
    apply_overrides(cfg, overrides or [])
    t0 = time.perf_counter()
    summary = fit(cfg, log=log)
    train_seconds = time.perf_counter() - t0

    best_path = Path(cfg.run.out_dir) / BEST_NAME
    state = load_run_checkpoint(best_path, "classification")
    model = load_model(checkpoint=best_path, ema="ema" in state, fused=False).model.eval()
    _, val_ds, _ = build_digits(cfg.data.image_size, seed=0, val_fraction=0.2, augment=False)
    loader = build_eval_loader(val_ds, batch_size=cfg.data.eval_batch_size or 256)
    before = evaluate_classifier(model, loader)
    fused = deploy_form(model)
    after = evaluate_classifier(fused, loader)
    with torch.inference_mode():
        images = torch.stack([val_ds[i][0] for i in range(min(len(val_ds), 64))])
        diff = float((model(images) - fused(images)).abs().max())
    result = {
        "dataset": "sklearn load_digits, upsampled",
        "image_size": cfg.data.image_size,
        "variant": cfg.model.variant,
        "train_images": int(summary.get("train_images", 0)) or None,
        "val_images": before["count"],
        "epochs": summary["epoch"],
        "steps": summary["step"],
        "train_seconds": round(train_seconds, 1),
        "threads": cfg.run.threads or torch.get_num_threads(),
        "best_epoch": int(state["epoch"]),
        "weights": "ema" if state.get("ema") else "model",
        "top1": before["top1"],
        "top1_fused": after["top1"],
        "loss": before["loss"],
        "loss_fused": after["loss"],
        "max_abs_logit_diff": diff,
        "fused": is_fused(fused),
        "checkpoint": str(best_path),
        "curves": summary.get("curves"),
        "history": summary.get("history", []),
    }
    from fastvit.files import atomic_write_text

    atomic_write_text(out_dir / "digits_metrics.json", json.dumps(result, indent=2) + "\n")
    log(f"digits: held-out top-1 {before['top1']:.2f}% (train-time form), "
        f"{after['top1']:.2f}% reparameterized (max |logit diff| {diff:.2e}); "
        f"trained {summary['epoch']} epochs in {train_seconds:.0f} s")
    return result
