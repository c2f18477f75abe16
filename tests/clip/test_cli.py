"""``fastvit zeroshot``, ``embed`` and ``search`` end to end on tiny images, and one line
(exit status 2, nothing written) for each bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from fastvit.cli import main
from fastvit.clip import read_index
from fastvit.deploy.predict import read_image
from fastvit.pipeline import eval_transform
from tests.clip.conftest import SIZE, open_clip, reference
from tests.helpers.images import make_image_folder, write_image, write_not_an_image

MODEL = ["--model", "MobileCLIP2-S0"]
CFG = {"input_size": (3, SIZE, SIZE), "crop_pct": 0.95, "interpolation": "bicubic",
       "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # MCi0's, at the file's size


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two classes of two small images, and an undecodable file in the folder."""
    root = make_image_folder(tmp_path_factory.mktemp("photos"), {"cat": 2, "red_car": 2},
                             size=(24, 32))
    write_not_an_image(root / "red_car" / "broken.jpg")
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_zeroshot_images(photos, s0_file, tmp_path, capsys):
    out_json = tmp_path / "zs.json"
    code, out, err = run(capsys, "zeroshot", photos, *MODEL, "--checkpoint", s0_file,
                         "--labels", "cat,red car,tree", "--json", out_json)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["labels"] == ["cat", "red car", "tree"]
    assert result["template"] == "a photo of a {}."
    rows = {row["image"]: row for row in result["images"]}
    broken = str(photos / "red_car" / "broken.jpg")
    assert rows[broken]["predictions"] == [] and "error" in rows[broken]
    assert "skipping unreadable image" in err and "skipped:" in out
    # every other image: all labels ranked, probabilities as open_clip computes them
    ref = reference("MobileCLIP2-S0")
    transform = eval_transform(CFG)
    tokens = open_clip.get_tokenizer("MobileCLIP2-S0")(
        [f"a photo of a {label}." for label in result["labels"]])
    images = [p for p in rows if p != broken]
    assert len(images) == 4
    with torch.no_grad():
        batch = torch.stack([transform(read_image(p)) for p in images])
        want = ref.get_logits(batch, tokens)[0].softmax(dim=-1)
    for image, expected in zip(images, want, strict=True):
        got = {p["label"]: p["probability"] for p in rows[image]["predictions"]}
        assert len(got) == 3 and abs(sum(got.values()) - 1) < 1e-5
        assert max(abs(got[label] - float(expected[i]))
                   for i, label in enumerate(result["labels"])) <= 1e-4


def test_zeroshot_folder_reports_accuracy(photos, s0_file, tmp_path, capsys):
    out_json = tmp_path / "folder.json"
    code, out, err = run(capsys, "zeroshot", "--data", photos, *MODEL, "--checkpoint", s0_file,
                         "--template", "a {} photo.", "--json", out_json, "--workers", 0)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["labels"] == ["cat", "red_car"] and result["template"] == "a {} photo."
    row = result["sets"]["train"]
    assert row["count"] == 4 and len(row["skipped"]) == 1
    assert set(result["analysis"]["per_class"]) == {"cat", "red_car"}
    assert "top-1" in out and "per-class top-1" in out


def test_embed_and_search(photos, s0_file, tmp_path, capsys):
    for name in ("photos.safetensors", "photos.npy"):
        index_file = tmp_path / name
        code, _, err = run(capsys, "embed", photos, *MODEL, "--checkpoint", s0_file,
                           "--out", index_file, "--batch-size", 3)
        assert code == 0, err
        assert f"wrote {index_file}" in err and "4 images x 512 dimensions" in err
        index = read_index(index_file)
        assert index.model == "MobileCLIP2-S0" and index.checkpoint == str(s0_file.resolve())
        assert len(index.paths) == 4 and list(index.skipped) == [
            str(photos / "red_car" / "broken.jpg")]
        assert index.preprocessing == {**CFG, "input_size": [3, SIZE, SIZE], "mean": [0.0] * 3,
                                       "std": [1.0] * 3}
        norms = index.embeddings.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
        with torch.no_grad():  # open_clip's embedding of the first image
            ref = reference("MobileCLIP2-S0")
            image = eval_transform(CFG)(read_image(index.paths[0]))
            want = ref.encode_image(image.unsqueeze(0), normalize=True)[0]
        assert float((index.embeddings[0] - want).abs().max()) <= 1e-4
    assert (tmp_path / "photos.json").is_file()  # the .npy's sidecar
    assert np.load(tmp_path / "photos.npy").shape == (4, 512)

    code, out, err = run(capsys, "search", tmp_path / "photos.safetensors", "a red car",
                         "--top", 2, "--json", tmp_path / "hits.json")
    assert code == 0, err
    hits = json.loads((tmp_path / "hits.json").read_text())["hits"]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["score"] >= hits[1]["score"]
    assert hits[0]["image"] in out
    probe = photos / "cat" / "1.jpg"
    code, out, err = run(capsys, "search", tmp_path / "photos.npy", "--image", probe,
                         "--json", "-")
    assert code == 0, err
    result = json.loads(out)
    assert result["hits"][0]["image"] == str(probe) and len(result["hits"]) == 4
    assert result["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith(f"fastvit {argv[0]}: error: ")
    assert "Traceback" not in err
    return lines[-1]


def test_bad_inputs_are_one_line_and_write_nothing(photos, s0_file, tmp_path, capsys,
                                                   monkeypatch):
    out_json, ckpt = tmp_path / "out.json", ["--checkpoint", s0_file]
    bad = write_not_an_image(tmp_path / "bad.jpg")
    good = write_image(tmp_path / "good.png", size=(20, 20))
    cases = {
        "cannot read image": ["zeroshot", good, bad, *MODEL, *ckpt, "--labels", "a,b",
                              "--json", out_json],
        "no labels": ["zeroshot", good, *MODEL, *ckpt, "--labels", " , ", "--json", out_json],
        "has no {} where the label goes": ["zeroshot", good, *MODEL, *ckpt, "--labels", "a",
                                           "--template", "a photo", "--json", out_json],
        "holds the image tower of fastvit_mci0": [
            "zeroshot", good, "--model", "MobileCLIP2-S3", *ckpt, "--labels", "a",
            "--json", out_json],
        "give images (files, folders, glob patterns) or --data DIR": [
            "zeroshot", *MODEL, *ckpt, "--labels", "a"],
        "ends in .safetensors or .npy": ["embed", good, *MODEL, *ckpt, "--out",
                                         tmp_path / "e.pt"],
        "image not found": ["embed", tmp_path / "missing.png", *MODEL, *ckpt, "--out",
                            tmp_path / "e.npy"],
        "give a search TEXT or --image IMG": ["search", tmp_path / "e.npy"],
        "embeddings file not found": ["search", tmp_path / "e.npy", "a cat"],
    }
    for expected, argv in cases.items():
        line = one_line_error(capsys, *argv)
        assert expected in line, (expected, line)
    assert not out_json.exists() and not list(tmp_path.glob("e.*"))

    code, _, err = run(capsys, "embed", good, bad, *MODEL, *ckpt, "--out", tmp_path / "e.npy")
    assert code == 2 and f"cannot read image {bad}" in err
    assert not list(tmp_path.glob("e.*")) and not list(tmp_path.glob(".e.*"))

    monkeypatch.setitem(sys.modules, "open_clip", None)
    line = one_line_error(capsys, "zeroshot", good, *MODEL, *ckpt, "--labels", "a")
    assert line == ("fastvit zeroshot: error: the MobileCLIP text tower needs "
                    "open_clip_torch: pip install 'fastvit[clip]'")
