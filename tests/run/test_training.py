"""The one run path (``fastvit.run.training.train_task``) on a tiny task: what it writes,
what it says, how a task's report replaces the common one, a resumed run continuing
the same schedule, and its one-line errors (a ``--resume`` with nothing to resume, a
DataLoader worker's error)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import default_collate

from fastvit.errors import CheckpointError, ConfigError, DataError
from fastvit.run.distributed import DistEnv
from fastvit.run.loop import StepOutput
from fastvit.run.lr_schedule import LrSchedule
from fastvit.run.store import checkpoint_name
from fastvit.run.training import RunSettings, TaskSpec, train_task
from fastvit.run.worker_errors import clean_worker_error
from tests.helpers.fit import NoisyPoints


@dataclass
class TinyRecipe:
    epochs: int = 2
    lr: float = 1e-2


def _build(recipe: TinyRecipe, seen: dict | None = None, **extra):
    def build(env: DistEnv, fresh: bool) -> TaskSpec:
        if seen is not None:
            seen["fresh"] = fresh
        data = NoisyPoints(24)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

        def step(net: nn.Module, batch) -> StepOutput:
            x, y = batch
            return StepOutput({"loss": nn.functional.cross_entropy(net(x), y)}, len(y))

        def evaluate(net: nn.Module) -> dict[str, float]:
            with torch.no_grad():
                return {"loss": float(nn.functional.cross_entropy(net(data.x), data.y))}

        return TaskSpec(model, data, step, lambda per_epoch, total: LrSchedule(
                            "cosine", main_steps=total, warmup_steps=2, warmup_start=0.1),
                        recipe.lr, 0.0, {"variant": "tiny"}, epochs=recipe.epochs,
                        collate_fn=default_collate, evaluate=evaluate,
                        score=lambda m: -m["loss"], header=["tiny train: 24 points"],
                        plot_metrics={"loss": "loss"}, **extra)

    return build


def _settings(out: Path, **kw) -> RunSettings:
    return RunSettings(out, 4, workers=0, device="cpu", log_every=1, show_progress=False, **kw)


def test_a_run_writes_its_files_and_states_its_settings(tmp_path):
    lines: list[str] = []
    report = train_task("tiny", TinyRecipe(), _settings(tmp_path), _build(TinyRecipe()),
                        log=lines.append)
    assert lines[0] == "tiny train: 24 points"
    assert lines[1].startswith("  run: 12 steps (6 per epoch), device cpu (")
    assert "contiguous, eager, 0 DataLoader worker(s)" in lines[1]
    assert report["total_steps"] == 12 and report["step"] == 12 and not report["stopped"]
    assert [r["step"] for r in report["eval"]] == [6, 12]
    assert report["train"][0]["lr"] == pytest.approx(1e-3)  # the warmup's first step
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["best_score"] == report["best_score"] and saved["task"] == "tiny"
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"epochs": 2, "lr": 0.01}
    assert (tmp_path / "loss.png").stat().st_size > 0 and (tmp_path / "best.pt").is_file()
    state = torch.load(tmp_path / checkpoint_name(12), weights_only=True)
    assert state["task"] == "tiny" and state["metadata"] == {"variant": "tiny"}


def test_a_task_report_replaces_the_common_one(tmp_path):
    build = _build(TinyRecipe(1), report=lambda base: {"steps": base["step"]},
                   report_name="summary.json", curves_name="curves.png")
    report = train_task("tiny", TinyRecipe(1), _settings(tmp_path), build)
    assert report == {"steps": 6}
    assert json.loads((tmp_path / "summary.json").read_text()) == {"steps": 6}
    assert not (tmp_path / "metrics.json").exists() and (tmp_path / "curves.png").is_file()


def test_a_resumed_run_continues_the_schedule(tmp_path):
    full = train_task("tiny", TinyRecipe(), _settings(tmp_path / "full"), _build(TinyRecipe()))
    train_task("tiny", TinyRecipe(), _settings(tmp_path / "half", max_steps=5),
               _build(TinyRecipe()))
    seen: dict = {}
    resumed = train_task("tiny", TinyRecipe(), _settings(tmp_path / "half", resume="auto"),
                         _build(TinyRecipe(), seen))
    assert seen["fresh"] is False  # the task may skip loading initial weights
    later = [r for r in resumed["train"] if r["step"] > 5]
    assert [r["lr"] for r in later] == [r["lr"] for r in full["train"] if r["step"] > 5]
    a = torch.load(tmp_path / "full" / checkpoint_name(12), weights_only=True)
    b = torch.load(tmp_path / "half" / checkpoint_name(12), weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_resume_of_a_folder_without_checkpoints_or_of_another_recipe_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no ckpt_step"):
        train_task("tiny", TinyRecipe(), _settings(tmp_path / "run",
                                                   resume=tmp_path / "empty"),
                   _build(TinyRecipe()))
    train_task("tiny", TinyRecipe(1), _settings(tmp_path / "one"), _build(TinyRecipe(1)))
    with pytest.raises(ConfigError, match="trained with another recipe"):
        train_task("tiny", TinyRecipe(), _settings(tmp_path / "one", resume="auto"),
                   _build(TinyRecipe()))


def test_a_model_without_trainable_parameters_is_refused(tmp_path):
    def build(env: DistEnv, fresh: bool) -> TaskSpec:
        spec = _build(TinyRecipe())(env, fresh)
        spec.model.requires_grad_(False)
        return spec

    with pytest.raises(ConfigError, match="no trainable parameters"):
        train_task("tiny", TinyRecipe(), _settings(tmp_path), build)


def test_a_worker_error_comes_back_as_its_one_line():
    folded = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback "
                       "(most recent call last):\n  File \"x.py\", line 1\n"
                       "fastvit.errors.DataError: cannot read image a.png: truncated\n")
    clean = clean_worker_error(folded)
    assert type(clean) is DataError and str(clean) == "cannot read image a.png: truncated"
    plain = DataError("no images")
    assert clean_worker_error(plain) is plain
