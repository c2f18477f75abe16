"""Acceptance: training on WebDataset shards, tracked in MLflow; a stopped shard run
resumes to the same weights; 2 torchrun processes see every sample of an epoch exactly once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fastvit.cli import main
from fastvit.data.shard_writer import write_shards
from fastvit.run.store import list_checkpoints
from tests.helpers.training import (
    REPO,
    cli_set_args,
    load_state,
    make_image_folder,
    subprocess_env,
    tiny_overrides,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = make_image_folder(tmp_path_factory.mktemp("folder"), num_classes=3,
                               train_per_class=4, size=32)
    out = tmp_path_factory.mktemp("shards")
    write_shards(folder, out, shard_size=5, progress=False)
    return out


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_shard_run_stops_resumes_and_is_tracked(shards, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    one_epoch = {"schedule.epochs": 1, "schedule.warmup_epochs": 0}
    args = ["train", "--config", "fastvit_t8", "--log-to", "mlflow",
            *cli_set_args(tiny_overrides(tmp_path / "whole", shards, **one_epoch))]
    assert main(args) == 0
    text = capsys.readouterr().err
    assert "shards: 3 train shards, 12 samples; an epoch is 12 of them" in text
    whole = load_state(list_checkpoints(tmp_path / "whole")[-1][1])
    split = ["train", "--config", "fastvit_t8",
             *cli_set_args(tiny_overrides(tmp_path / "split", shards, **one_epoch))]
    assert main([*split, "--max-steps", "2"]) == 0  # stops mid-epoch (3 steps an epoch)
    assert main([*split, "--resume", "auto"]) == 0
    resumed = load_state(list_checkpoints(tmp_path / "split")[-1][1])
    assert resumed["step"] == whole["step"] == 3
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    from mlflow.tracking import MlflowClient

    ids = json.loads((tmp_path / "whole" / "tracking.json").read_text())
    run = MlflowClient((tmp_path / "mlruns").as_uri()).get_run(ids["mlflow"])
    assert run.data.params["model.variant"] == "fastvit_t8"
    assert "eval/model/top1" in run.data.metrics
    code = main(["evaluate", "--checkpoint", str(tmp_path / "whole" / "best.safetensors"),
                 "--data", str(shards), "--json", str(tmp_path / "eval.json")])
    assert code == 0
    assert json.loads((tmp_path / "eval.json").read_text())["sets"]["val"]["count"] == 9


EPOCH_CHECK = """
import hashlib, json, sys
import torch.distributed as dist
from fastvit.data.shards import open_shards
from fastvit.run.sampling import build_train_loader
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
train = open_shards(sys.argv[1], "train", transform=None, bad_images="skip")
loader = build_train_loader(train, batch_size=2, workers=2, seed=5, rank=rank,
                            world_size=world)
loader.sampler.set_epoch(1)
seen = [hashlib.md5(img.numpy().tobytes()).hexdigest()
        for batch in loader for img in batch.images]
gathered = [None] * world
dist.all_gather_object(gathered, seen)
if rank == 0:
    print(json.dumps(gathered))
dist.destroy_process_group()
"""


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_two_torchrun_processes_see_each_sample_once_in_an_epoch(shards, tmp_path):
    script = tmp_path / "epoch_check.py"
    script.write_text(EPOCH_CHECK)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), str(shards)],
                          env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(ranks[0]) == len(ranks[1]) == 6  # 2 DataLoader workers each
    assert len(set(ranks[0] + ranks[1])) == 12  # all 12 samples, none twice
