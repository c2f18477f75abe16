"""Corrupt vs unsafe checkpoint files: two different problems, two different messages.

A file that ``torch.load(weights_only=True)`` refuses is either bytes that are no
(complete) pickle -- random bytes, a cut-off download, a damaged archive: "corrupt or
truncated" -- or a well-formed pickle that would import arbitrary Python objects:
"refusing ... unsafe". Nothing in any file is ever run.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fastvit.checkpoints import read_checkpoint
from fastvit.cli import main as cli_main
from fastvit.errors import CheckpointError


class _CreatesFile:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))



def _zip_checkpoint(path, **payload) -> bytes:
    torch.save({"state_dict": {"stem.0.reparam_conv.weight": torch.zeros(1)}, **payload}, path)
    return path.read_bytes()


def _corrupt_files(tmp_path) -> dict[str, object]:
    rng = np.random.default_rng(0)
    good = _zip_checkpoint(tmp_path / "good.pt")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(64)}, legacy, _use_new_zipfile_serialization=False)
    middle = len(good) // 2
    files = {
        "random.pt": rng.bytes(4096),
        "random_after_pickle_header.pt": b"\x80\x02" + rng.bytes(4096),
        "random_protocol0_global.pt": b"c" + rng.bytes(4096),  # 'c' is pickle's GLOBAL
        "truncated_zip.pth": good[: middle],
        "zip_with_garbage_inside.pth": good[:200] + rng.bytes(300) + good[500:],
        "truncated_legacy.pth": legacy.read_bytes()[:40],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def _unsafe_files(tmp_path) -> dict[str, object]:
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil_zip.pt"
    _zip_checkpoint(zipped, payload=_CreatesFile(str(marker)))
    legacy = tmp_path / "evil_legacy.pt"
    torch.save({"w": torch.zeros(1), "payload": _CreatesFile(str(marker))}, legacy,
               _use_new_zipfile_serialization=False)
    plain = tmp_path / "evil_plain.pkl"
    plain.write_bytes(pickle.dumps({"payload": _CreatesFile(str(marker))}, protocol=5))
    return {"marker": marker, "files": [zipped, legacy, plain]}


def test_corrupt_files_are_called_corrupt_not_unsafe(tmp_path):
    for name, path in _corrupt_files(tmp_path).items():
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert "corrupt or truncated" in message and str(path) in message, (name, message)
        assert "refusing" not in message and "unsafe" not in message, (name, message)


def test_unsafe_pickles_are_refused_as_unsafe_not_corrupt(tmp_path):
    unsafe = _unsafe_files(tmp_path)
    for path in unsafe["files"]:
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert message.startswith(f"refusing to load checkpoint {path}: unsafe"), message
        assert "builtins.open" in message or "io.open" in message, message  # what it imports
        assert "corrupt" not in message, message
    assert not unsafe["marker"].exists()  # nothing ran


def test_convert_names_a_corrupt_file_in_one_line(tmp_path, capsys):
    garbage = tmp_path / "random.pth"
    garbage.write_bytes(np.random.default_rng(1).bytes(2048))
    assert cli_main(["convert", str(garbage), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastvit convert: error: cannot read checkpoint") and "\n" not in err
    assert "corrupt or truncated" in err and "arbitrary" not in err


def test_recorded_preprocessing_travels_with_the_weights(tmp_path):
    """A run trained at 48x48 records it; load_model (and so evaluate/predict/export) use it."""
    from fastvit.checkpoints import preprocessing_from_metadata, save_checkpoint
    from fastvit.factory import create_model
    from fastvit.pipeline import eval_transform, load_model

    cfg = {"input_size": [3, 48, 48], "crop_pct": 1.0, "interpolation": "bilinear",
           "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "architecture": "ignored"}
    path = save_checkpoint(create_model("fastvit_t8", num_classes=3), tmp_path / "w.safetensors",
                           metadata={"pretrained_cfg": cfg, "val_split": {"fraction": 0.1,
                                                                          "seed": 3}})
    loaded = load_model(checkpoint=path)
    assert loaded.image_size == 48 and loaded.cfg["crop_pct"] == 1.0
    assert loaded.cfg["interpolation"] == "bilinear" and loaded.cfg["mean"] == (0.5, 0.5, 0.5)
    assert loaded.cfg["architecture"] == "fastvit_t8"  # only preprocessing keys are taken
    assert eval_transform(loaded.cfg)(torch.zeros(3, 100, 80, dtype=torch.uint8)).shape == \
        (3, 48, 48)
    plain = save_checkpoint(create_model("fastvit_t8", num_classes=3), tmp_path / "p.safetensors")
    assert load_model(checkpoint=plain).image_size == 256  # nothing recorded: the variant's
    for bad in ({"pretrained_cfg": "[1, 2"}, {"pretrained_cfg": {"input_size": [48, 48]}},
                {"pretrained_cfg": "[3, 48, 48]"}):
        with pytest.raises(CheckpointError, match="pretrained_cfg|input_size"):
            preprocessing_from_metadata(bad)
