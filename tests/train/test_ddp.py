"""Acceptance: a 2-process gloo torchrun run trains, checkpoints, stops, resumes and
evaluates; its metrics equal a single-process evaluation of the same checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastvit.run.store import checkpoint_name
from tests.helpers.training import (
    REPO,
    cli_set_args,
    load_state,
    make_image_folder,
    subprocess_env,
    tiny_config,
    tiny_overrides,
)

# 24 train images over 2 ranks, batch 4: 3 steps per epoch, 2 epochs; 9 val images (odd: the
# shards are 5 + 4, so a padded sampler would count an image twice)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", "2", "-m", "fastvit", "train", *args]
    return subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=400)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_two_process_gloo_train_resume_and_evaluate(tmp_path):
    from fastvit.data import build_eval_loader
    from fastvit.evaluate import evaluate_classifier
    from fastvit.factory import create_model
    from fastvit.run.metrics_log import read_metrics
    from fastvit.train.data import build_datasets

    data = make_image_folder(tmp_path / "data", num_classes=3, train_per_class=8)
    out = tmp_path / "ddp"
    args = ["--config", "fastvit_t8",
            *cli_set_args(tiny_overrides(out, data, **{"run.device": "cpu"}))]

    first = _torchrun([*args, "--stop-at-step", "4"])
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    stopped = load_state(out / checkpoint_name(4))
    assert (stopped["world_size"], stopped["epoch"], stopped["batch_in_epoch"]) == (2, 1, 1)
    assert len(stopped["rng"]) == 2  # one RNG snapshot per rank

    second = _torchrun([*args, "--resume", "auto"])
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert second.stderr.count("epoch 2/2 (") == 1  # rank 0 logs, rank 1 does not
    final = load_state(out / checkpoint_name(6))
    assert (final["step"], final["epoch"]) == (6, 2)

    logged = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert logged[-1]["step"] == 6
    cfg = tiny_config(out, data, **{"run.device": "cpu"})
    _, val_ds, classes = build_datasets(cfg)
    loader = build_eval_loader(val_ds, batch_size=5)
    for name in ("model", "ema"):
        model = create_model("fastvit_t8", num_classes=len(classes))
        model.load_state_dict(final[name])
        single = evaluate_classifier(model, loader)
        distributed = logged[-1][name]
        assert distributed["count"] == single["count"] == len(val_ds) == 9
        assert distributed["top1"] == pytest.approx(single["top1"], abs=1e-9)
        assert distributed["top5"] == pytest.approx(single["top5"], abs=1e-9)
        assert distributed["loss"] == pytest.approx(single["loss"], rel=1e-5, abs=1e-6)
        assert final["metrics"][name] == distributed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6 and not summary["stopped"]
    assert torch.isfinite(torch.tensor(summary["best_top1"]))
    assert Path(summary["curves"]).is_file()
