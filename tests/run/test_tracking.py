"""--log-to mlflow / wandb: params, metrics per step, artifacts, a resumed run continues."""

from __future__ import annotations

import pytest

from fastvit.errors import ConfigError
from fastvit.run.metrics_log import MetricsLogger
from fastvit.run.tracking import TRACKING_NAME, flat_metrics, parse_log_to

RECIPE = {"data": {"batch_size": 8, "scale": [0.08, 1.0]}, "optim": {"lr": 0.001}}


def test_log_to_names():
    assert parse_log_to("tensorboard,mlflow") == ("tensorboard", "mlflow")
    assert parse_log_to("none") == ()
    with pytest.raises(ConfigError, match="unknown comet"):
        parse_log_to("mlflow,comet")
    assert flat_metrics({"kind": "eval", "step": 3, "model": {"top1": 50.0, "n": 2}}) == {
        "eval/model/top1": 50.0, "eval/model/n": 2.0}


def test_an_mlflow_run_is_written_and_read_back(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    logger = MetricsLogger(out, tensorboard=False, log_to=("mlflow",), params=RECIPE)
    for step in (1, 2):
        logger.log({"kind": "train", "step": step, "epoch": 0, "loss": 3.0 - step, "lr": 0.1})
    (out / "curves.png").write_bytes(b"png")
    logger.finish([out / "curves.png", out / "missing.safetensors"])
    run_id = (out / TRACKING_NAME).read_text().split('"mlflow": "')[1].split('"')[0]
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.batch_size"] == "8"
    assert run.data.params["data.scale"] == "[0.08, 1.0]"
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["curves.png"]
    # a resumed run continues the same MLflow run
    again = MetricsLogger(out, tensorboard=False, log_to=("mlflow",), params=RECIPE)
    again.log({"kind": "train", "step": 3, "epoch": 1, "loss": 0.5, "lr": 0.1})
    again.finish()
    assert len(client.get_metric_history(run_id, "train/loss")) == 3
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_wandb_offline_writes_its_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    logger = MetricsLogger(out, tensorboard=False, log_to=("wandb",), params=RECIPE)
    logger.log({"kind": "eval", "step": 5, "epoch": 1, "model": {"top1": 40.0}})
    logger.finish()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_only_rank_0_tracks(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=False, log_to=("mlflow", "wandb"))
    logger.log({"kind": "train", "step": 1, "loss": 1.0})
    logger.finish()
    assert not (tmp_path / TRACKING_NAME).exists()
