"""``fastvit.cli.tasks``: the flags ``detect``, ``segment`` and ``hand`` spell alike."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fastvit.cli import main as cli_main

# command -> (its data flags, the engine.train keyword that receives the split)
TASKS = {
    "detect": (["--train-images", "{d}", "--train-ann", "{d}/a.json"], "val_ann"),
    "segment": (["--data", "{d}"], "val_split"),
    "hand": (["--data", "{d}", "--mano", "{d}/mano.npz"], "eval_split"),
}
ENGINES = {"detect": "detection", "segment": "segmentation", "hand": "hand"}


def run_train(command: str, tmp_path: Path, monkeypatch, *flags: str) -> object:
    """What ``COMMAND train ... FLAGS`` hands its engine as the validation split."""
    seen = {}

    def train(recipe, **kwargs):  # the command's decision, without training
        seen.update(kwargs)
        return {"last_eval": {}, "checkpoint": "unused", "train": []}

    engine = importlib.import_module(f"fastvit.tasks.{ENGINES[command]}.engine")
    monkeypatch.setattr(engine, "train", train)  # imported here: a test alone has not yet
    data, key = TASKS[command]
    args = [command, "train", *(a.format(d=tmp_path) for a in data),
            "--out", str(tmp_path / "run"), *flags]
    assert cli_main(args) == 0
    return seen[key]


@pytest.mark.parametrize("command", sorted(TASKS))
def test_no_val_and_its_old_spelling(command, tmp_path, monkeypatch, capsys):
    assert run_train(command, tmp_path, monkeypatch, "--no-val") is None
    assert "--no-val" not in capsys.readouterr().err
    assert run_train(command, tmp_path, monkeypatch, "--val-split", "none") is None
    err = capsys.readouterr().err.strip()
    assert err == "fastvit: --val-split none is spelled --no-val now"
    with pytest.raises(SystemExit):
        cli_main([command, "train", "--help"])
    assert "--no-val" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["segment", "hand"])
def test_val_split_names_the_split(command, tmp_path, monkeypatch):
    assert run_train(command, tmp_path, monkeypatch, "--val-split", "mine") == "mine"


def test_hand_keeps_its_eval_split_alias(tmp_path, monkeypatch):
    assert run_train("hand", tmp_path, monkeypatch, "--eval-split", "mine") == "mine"
