"""``--pretrained`` on the commands that build a model, and ``fastvit weights``."""

import json
import os

import pytest

from fastvit.cli import main
from fastvit.data.robustness import imagenet_wnids
from fastvit.models import is_fused
from tests.helpers.images import write_image
from tests.helpers.weights import GOLDFISH, serve_folder, weights_model, write_official

T8_PATH = "image_classification_models/fastvit_t8.pth.tar"
T8_DIST_REPARAM = "image_classification_distilled_models/fastvit_t8_reparam.pth.tar"


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A served copy of the release's layout (t8 in1k, t8 dist_in1k_reparam); no Hub."""
    from fastvit.models import reparameterize
    from fastvit.weights import resolve

    root = tmp_path / "www"
    write_official(root, weights_model("fastvit_t8"), T8_PATH)
    write_official(root, reparameterize(weights_model("fastvit_t8", seed=1)), T8_DIST_REPARAM)
    monkeypatch.setattr(resolve, "hub_available", lambda: False)
    with serve_folder(root) as base:
        monkeypatch.setenv("FASTVIT_WEIGHTS_URL", base)
        yield base


def test_predict_with_official_weights_prints_imagenet_names(tmp_path, release, capsys):
    image = write_image(tmp_path / "cat.jpg", size=(80, 96))
    assert main(["predict", str(image), "--model", "fastvit_t8", "--pretrained", "in1k",
                 "--image-size", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(image) and len(out) == 6  # the image, then the top-5
    assert out[1].startswith("  1. 100.00%  goldfish (class 1)")


def test_evaluate_maps_imagenet_wnid_folders_onto_official_weights(tmp_path, release, capsys):
    wnids = imagenet_wnids()
    for index in (0, GOLDFISH):  # tench (never predicted), goldfish (always predicted)
        for i in range(2):
            write_image(tmp_path / "data" / "val" / wnids[index] / f"{i}.png", seed=i)
    assert main(["evaluate", "--model", "fastvit_t8", "--pretrained", "in1k", "--data",
                 str(tmp_path / "data"), "--image-size", "64", "--workers", "0",
                 "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sets"]["val"]["top1"] == pytest.approx(50.0)
    assert result["checkpoint"].startswith("fastvit_t8.in1k (http://127.0.0.1:")


@pytest.mark.slow
def test_export_and_bench_take_pretrained(tmp_path, release, capsys):
    out = tmp_path / "t8.pt"
    assert main(["export", "--model", "fastvit_t8", "--pretrained", "dist_in1k_reparam",
                 "--format", "torchscript", "--image-size", "64", "--output", str(out)]) == 0
    assert out.is_file()
    assert main(["bench", "fastvit_t8", "--pretrained", "in1k", "--runs", "2", "--warmup", "0",
                 "--throughput-batch", "0", "--image-size", "64",
                 "--out", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert "--pretrained in1k" in report["command"]
    assert main(["bench", "fastvit_t8", "fastvit_t12", "--pretrained", str(out),
                 "--out", str(tmp_path / "c")]) == 2
    assert "is one model's weights" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["predict", "x.jpg", "--checkpoint", "a", "--pretrained", "in1k"], "not both"),
    (["export", "--pretrained", "in1k", "--format", "onnx"], "needs a variant"),
    (["predict", "{image}", "--model", "fastvit_t8", "--pretrained", "in21k"],
     "checkpoint not found: in21k (not a weights tag either"),
    (["weights", "download", "fastvit_xl"], "neither a FastViT variant"),
    (["weights", "list", "fastvit_xl"], "unknown FastViT variant 'fastvit_xl'"),
    (["weights", "download", "fastvit_t8", "--tag", "in21k"], "unknown weights tag 'in21k'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    image = str(write_image(tmp_path / "x.jpg"))
    assert main([a.replace("{image}", image) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_weights_list_download_verify(release, isolated_caches, capsys):
    assert main(["weights", "list", "fastvit_t8", "--tag", "in1k", "dist_in1k_reparam"]) == 0
    out = capsys.readouterr().out
    assert "| fastvit_t8.in1k | train-time | 76.2 | timm/fastvit_t8.apple_in1k | no |" in out
    assert "| fastvit_t8.dist_in1k_reparam | fused | 77.2 | - (official URL only) | no |" in out
    assert main(["weights", "download", "fastvit_t8", "--tag", "in1k", "dist_in1k_reparam",
                 "--no-progress", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    cached = isolated_caches / "official"
    assert [r["path"] for r in rows] == [str(cached / T8_PATH), str(cached / T8_DIST_REPARAM)]
    assert main(["weights", "list", "fastvit_t8", "--json", "-"]) == 0
    listed = {r["tag"]: r["cached"] for r in json.loads(capsys.readouterr().out)}
    assert listed == {"in1k": str(cached / T8_PATH), "dist_in1k": None,
                      "in1k_reparam": None, "dist_in1k_reparam": str(cached / T8_DIST_REPARAM)}
    assert main(["weights", "verify"]) == 0
    assert "2 files checked, 0 mismatched" in capsys.readouterr().out
    with open(cached / T8_PATH, "r+b") as fh:  # flip one byte: bit rot, a bad copy
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 1]))
    assert main(["weights", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"  mismatch  {cached / T8_PATH} (expected " in out
    assert "2 files checked, 1 mismatched" in out


def test_verify_checks_hub_blobs_and_reports_leftovers(tmp_path, isolated_caches, capsys):
    from tests.helpers.weights import populate_hf_cache

    snapshot = populate_hf_cache(isolated_caches / "hub", "timm/fastvit_t8.apple_in1k",
                                 {"model.safetensors": b"weights"})
    (isolated_caches / "official").mkdir(parents=True)
    (isolated_caches / "official" / ".x.pth.tar.abc.tmp").write_bytes(b"partial")
    assert main(["weights", "verify", "--json", "-"]) == 0
    rows = {r["status"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"ok", "leftover"}
    blob = os.path.realpath(snapshot / "model.safetensors")
    with open(blob, "wb") as fh:
        fh.write(b"tampered")
    assert main(["weights", "verify"]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_offline_predict_names_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image = write_image(tmp_path / "x.jpg")
    assert main(["predict", str(image), "--model", "fastvit_t8", "--pretrained", "in1k"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit predict: error: offline (HF_HUB_OFFLINE=1) and the "
                          "fastvit_t8.in1k weights are not cached")


def test_train_and_task_backbones_start_from_a_tag(tmp_path, release):
    import torch

    from fastvit.tasks.backbone import FastVitBackbone
    from fastvit.train.distill import build_teacher
    from fastvit.train.trainer import build_model
    from tests.helpers.training import tiny_config

    reference = weights_model("fastvit_t8").state_dict()
    cfg = tiny_config(tmp_path / "out", "unused", **{"model.pretrained": "in1k",
                                                     "model.reset_classifier": True})
    model = build_model(cfg, num_classes=3)
    assert model.head.fc.out_features == 3 and not is_fused(model)
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items()
               if not k.startswith("head."))
    backbone = FastVitBackbone("fastvit_t8", "in1k")
    body = backbone.body.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in body.items())
    teacher = build_teacher("fastvit_t8", "in1k", 1000)  # distillation teachers too
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(teacher(x), weights_model("fastvit_t8")(x), atol=1e-3, rtol=1e-4)
