"""Checkpoint layouts, loading, safety, error messages, our format and ``fastvit convert``.

Tolerances: renamed or re-saved weights must reproduce outputs exactly (0.0);
weights fused by another implementation (timm) or on the way into a model
agree within 1e-5 of the output scale (max |diff| / max |output|).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.utils.model import reparameterize_model

import fastvit
from fastvit.checkpoints import (
    class_names_from_metadata,
    convert_state_dict,
    detect_layout,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    to_official_layout,
)
from fastvit.cli import main as cli_main
from fastvit.errors import CheckpointError
from tests.helpers.checkpoints import (
    official_layout_fixture,
    random_model,
    read_reference,
    relative_difference,
    same_state,
    shapes,
)

TOL = 1e-5
SMALL = ["fastvit_t8", "fastvit_sa12"]  # the variants with reference key lists


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[fastvit.FastVit, fastvit.FastVit]]:
    """Per small variant: (train-time model with random stats, its fused copy)."""
    out = {}
    for i, name in enumerate(SMALL):
        model = random_model(name, seed=i + 1)
        out[name] = (model, fastvit.reparameterize(model))
    return out


def _timm_pair(name: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    model = fastvit.randomize_model_stats(timm.create_model(name, pretrained=False), seed).eval()
    return model, reparameterize_model(model)


# ---------------------------------------------------------------------------
# Layouts: reference key lists, the official fixture, detection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SMALL)
def test_our_keys_and_shapes_equal_timm_reference(trained, name):
    model, fused = trained[name]
    assert shapes(model.state_dict()) == read_reference(f"{name}.timm.unfused")
    assert shapes(fused.state_dict()) == read_reference(f"{name}.timm.fused")


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("form", ["unfused", "fused"])
def test_official_fixture_equals_reference(trained, name, form):
    model = trained[name][form == "fused"]
    produced = shapes(official_layout_fixture(model.state_dict()))
    assert produced == read_reference(f"{name}.official.{form}")
    # the package's reverse converter agrees with the independent fixture
    assert shapes(to_official_layout(model.state_dict())) == produced


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("form", ["unfused", "fused"])
def test_official_layout_loads_exactly(trained, tmp_path, name, form):
    fused = form == "fused"
    source = trained[name][fused]
    official = official_layout_fixture(source.state_dict())
    layout = detect_layout(official)
    assert (layout.name, layout.fused, layout.variant, layout.exact) == ("official", fused,
                                                                          name, True)
    path = tmp_path / f"{name}.pth.tar"
    torch.save({"state_dict": official}, path)
    loaded = fastvit.create_model(name, inference_mode=fused, checkpoint=path)
    assert same_state(loaded, source)
    assert same_state(loaded, convert_state_dict(official))
    if fused and name == "fastvit_sa12":
        assert relative_difference(source, loaded) == 0.0


@pytest.mark.parametrize("name", fastvit.list_models())
@pytest.mark.parametrize("fused", [False, True])
def test_every_variant_is_recognised_in_both_layouts(name, fused):
    """Weightless (meta-device) models: the mapping and the variant guess for all seven."""
    with torch.device("meta"):
        model = fastvit.create_model(name, inference_mode=fused)
    ours = model.state_dict()
    official = official_layout_fixture(ours)
    for state, layout_name in ((ours, "ours"), (official, "official")):
        layout = detect_layout(state)
        assert (layout.name, layout.fused, layout.variant, layout.exact) == (
            layout_name, fused, name, True)
    assert shapes(convert_state_dict(official)) == shapes(ours)
    assert shapes(to_official_layout(ours)) == shapes(official)


def test_detect_layout_of_timm_and_mixed(trained):
    model, fused = trained["fastvit_t8"]
    assert detect_layout(model.state_dict()).fused is False
    assert detect_layout({"module." + k: v for k, v in fused.state_dict().items()}).fused is True
    partly = random_model("fastvit_t8", seed=3)
    fastvit.reparameterize(partly.stem, inplace=True)
    layout = detect_layout(partly.state_dict())
    assert layout.fused is None and layout.variant == "fastvit_t8"
    with pytest.raises(CheckpointError, match="not a FastViT state dict"):
        detect_layout({"encoder.weight": torch.zeros(1)})


def test_partly_fused_checkpoint_fuses_the_same_blocks(tmp_path):
    source = random_model("fastvit_t8", seed=4)
    fastvit.reparameterize(source.stem, inplace=True)
    fastvit.reparameterize(source.stages[1].downsample, inplace=True)
    torch.save(source.state_dict(), tmp_path / "partial.pt")
    with pytest.warns(UserWarning, match="fused"):
        loaded = fastvit.create_model("fastvit_t8", checkpoint=tmp_path / "partial.pt")
    assert relative_difference(source, loaded) == 0.0


# ---------------------------------------------------------------------------
# timm parity
# ---------------------------------------------------------------------------


def _check_timm_parity(name: str, tmp_path: Path, seed: int) -> None:
    timm_model, timm_fused = _timm_pair(name, seed)
    state = timm_model.state_dict()
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.pth")
    ours = fastvit.create_model(name, checkpoint=tmp_path / "plain.pth")
    assert relative_difference(timm_model, ours) <= TOL
    assert same_state(fastvit.create_model(name, checkpoint=tmp_path / "ddp.pth"), state)
    torch.save(timm_fused.state_dict(), tmp_path / "fused.pth")
    inference = fastvit.create_model(name, inference_mode=True, checkpoint=tmp_path / "fused.pth")
    assert relative_difference(timm_fused, inference) == 0.0  # same weights, same ops
    with pytest.warns(UserWarning, match="reparameterized before loading"):
        auto = fastvit.create_model(name, checkpoint=tmp_path / "fused.pth")
    assert fastvit.is_fused(auto) and same_state(auto, inference)


@pytest.mark.parametrize("name", SMALL)
def test_timm_checkpoints_load_with_parity(tmp_path, name):
    _check_timm_parity(name, tmp_path, seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("name", fastvit.list_models())
def test_timm_checkpoints_load_with_parity_all_variants(tmp_path, name):
    _check_timm_parity(name, tmp_path, seed=11)


def test_train_time_checkpoint_into_inference_model_is_fused_on_the_way(trained, tmp_path):
    model, fused = trained["fastvit_sa12"]
    torch.save(model.state_dict(), tmp_path / "train.pt")
    inference = fastvit.create_model("fastvit_sa12", inference_mode=True,
                                     checkpoint=tmp_path / "train.pt")
    assert fastvit.is_fused(inference)
    assert same_state(inference, fused)  # the same fusion code ran
    assert relative_difference(model, inference) <= TOL


# ---------------------------------------------------------------------------
# Containers, prefixes, EMA, features_only, wrappers
# ---------------------------------------------------------------------------


def test_training_checkpoint_model_and_ema(trained, tmp_path):
    model, _ = trained["fastvit_t8"]
    ema_source = random_model("fastvit_t8", seed=9)
    ema = torch.optim.swa_utils.AveragedModel(ema_source)  # keys 'module.*' + 'n_averaged'
    compiled_keys = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    ckpt = {"model": compiled_keys, "ema": ema.state_dict(), "epoch": 3, "classes": ["a", "b"],
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}
    torch.save(ckpt, tmp_path / "last.pt")
    plain = fastvit.create_model("fastvit_t8", checkpoint=tmp_path / "last.pt")
    assert same_state(plain, model)
    ema_model = load_checkpoint(fastvit.create_model("fastvit_t8"), tmp_path / "last.pt",
                                use_ema=True)
    assert same_state(ema_model, ema_source)
    _, meta = read_checkpoint(tmp_path / "last.pt")
    assert meta["epoch"] == "3" and class_names_from_metadata(meta) == ["a", "b"]
    # timm's training-script names
    torch.save({"state_dict": model.state_dict(), "state_dict_ema": ema_source.state_dict()},
               tmp_path / "timm_train.pth.tar")
    timm_ema = load_checkpoint(fastvit.create_model("fastvit_t8"),
                               tmp_path / "timm_train.pth.tar", use_ema=True)
    assert same_state(timm_ema, ema_source)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="without EMA"):
        load_checkpoint(fastvit.create_model("fastvit_t8"), tmp_path / "bare.pt", use_ema=True)


def test_features_only_model_skips_the_head(trained, tmp_path):
    model, _ = trained["fastvit_t8"]
    save_checkpoint(model, tmp_path / "t8.safetensors")
    backbone = fastvit.create_model("fastvit_t8", features_only=True,
                                    checkpoint=tmp_path / "t8.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
        got = backbone.eval()(x)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_load_into_compiled_wrapper(trained):
    model, _ = trained["fastvit_t8"]
    target = fastvit.create_model("fastvit_t8")
    wrapped = torch.compile(target)  # compiles lazily: nothing is compiled here
    assert load_checkpoint(wrapped, model.state_dict()) is wrapped
    assert torch.equal(target.stem[0].conv_kxk[0].conv.weight,
                       model.stem[0].conv_kxk[0].conv.weight)


# ---------------------------------------------------------------------------
# Safety and broken files
# ---------------------------------------------------------------------------


class _CreatesFile:
    """Unpickling this calls open(path, 'w'): a stand-in for any code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"stem.0.reparam_conv.weight": torch.zeros(1)},
                "payload": _CreatesFile(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to load") as err:
        fastvit.create_model("fastvit_t8", checkpoint=path)
    assert str(path) in str(err.value) and "open" in str(err.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing"):
        read_checkpoint(path)
    assert not marker.exists()
    # control: an unsafe load of the same file really would have run the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_checkpoint_names_the_file(trained, tmp_path, suffix):
    model, _ = trained["fastvit_t8"]
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), whole)
    else:
        save_checkpoint(model, whole)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        fastvit.create_model("fastvit_t8", checkpoint=cut)
    assert str(cut) in str(err.value)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=str(garbage)):
        read_checkpoint(garbage)


# ---------------------------------------------------------------------------
# Mismatch errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ours", "official"])
def test_other_variant_names_the_likely_variant(trained, tmp_path, layout):
    model, _ = trained["fastvit_sa12"]
    state = model.state_dict()
    if layout == "official":
        state = {"state_dict": official_layout_fixture(state)}
    torch.save(state, tmp_path / "sa12.pth")
    with pytest.raises(CheckpointError) as err:
        fastvit.create_model("fastvit_t8", checkpoint=tmp_path / "sa12.pth")
    message = str(err.value)
    assert "fastvit_sa12" in message and "most likely" in message
    assert "missing" in message and "unexpected" in message and "shape differs" in message
    assert "more" in message and len(message) < 4000  # truncated lists


def test_num_classes_mismatch_suggests_the_fix(trained, tmp_path):
    model, _ = trained["fastvit_t8"]
    torch.save(model.state_dict(), tmp_path / "t8.pth")
    with pytest.raises(CheckpointError, match="num_classes=1000"):
        fastvit.create_model("fastvit_t8", num_classes=10, checkpoint=tmp_path / "t8.pth")
    with pytest.warns(UserWarning, match="strict=False"):
        finetune = load_checkpoint(fastvit.create_model("fastvit_t8", num_classes=10),
                                   tmp_path / "t8.pth", strict=False)
    assert torch.equal(finetune.final_conv.se.fc1.weight, model.final_conv.se.fc1.weight)
    assert finetune.head.fc.weight.shape == (10, 768)


def test_in_chans_mismatch_suggests_the_fix(tmp_path):
    source = fastvit.create_model("fastvit_t8", in_chans=1, num_classes=10)
    torch.save(source.state_dict(), tmp_path / "gray.pth")
    with pytest.raises(CheckpointError, match="in_chans=1") as err:
        fastvit.create_model("fastvit_t8", checkpoint=tmp_path / "gray.pth")
    assert "num_classes=10" in str(err.value)
    loaded = fastvit.create_model("fastvit_t8", in_chans=1, num_classes=10,
                                  checkpoint=tmp_path / "gray.pth")
    assert same_state(loaded, source)


def test_fused_file_of_other_variant_leaves_the_model_untouched(trained, tmp_path):
    _, fused = trained["fastvit_sa12"]
    torch.save(fused.state_dict(), tmp_path / "sa12_fused.pth")
    model = fastvit.create_model("fastvit_t8")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="fastvit_sa12"):
        load_checkpoint(model, tmp_path / "sa12_fused.pth")
    assert not fastvit.is_fused(model) and same_state(model, before)


# ---------------------------------------------------------------------------
# Our format
# ---------------------------------------------------------------------------


def test_safetensors_round_trip_with_metadata(trained, tmp_path):
    _, fused = trained["fastvit_sa12"]
    names = [f"class {i}" for i in range(1000)]
    path = save_checkpoint(fused, tmp_path / "sa12.safetensors", class_names=names,
                           metadata={"epochs": 300, "note": "test"})
    assert [p.name for p in tmp_path.iterdir()] == ["sa12.safetensors"]  # no temp file left
    state, meta = read_checkpoint(path)
    assert meta["format"] == "fastvit" and meta["format_version"] == "1"
    assert (meta["variant"], meta["fused"], meta["num_classes"]) == ("fastvit_sa12", "true",
                                                                       "1000")
    assert meta["epochs"] == "300" and meta["note"] == "test"
    assert class_names_from_metadata(meta) == names
    loaded = fastvit.create_model("fastvit_sa12", inference_mode=True, checkpoint=path)
    assert same_state(loaded, fused) and same_state(loaded, state)
    with pytest.raises(CheckpointError, match="3 class names"):
        save_checkpoint(fused, tmp_path / "bad.safetensors", class_names=["a", "b", "c"])


def test_foreign_safetensors_without_metadata(trained, tmp_path):
    model, _ = trained["fastvit_t8"]
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "model.safetensors"))  # e.g. a timm hub file: no metadata
    loaded = fastvit.create_model("fastvit_t8", checkpoint=tmp_path / "model.safetensors")
    assert same_state(loaded, model)


# ---------------------------------------------------------------------------
# fastvit convert
# ---------------------------------------------------------------------------


def test_convert_official_file(trained, tmp_path, capsys):
    model, fused = trained["fastvit_sa12"]
    src = tmp_path / "fastvit_sa12.pth.tar"
    torch.save({"state_dict": official_layout_fixture(model.state_dict())}, src)
    dst = tmp_path / "out.safetensors"
    assert cli_main(["convert", str(src), str(dst)]) == 0
    assert "fastvit_sa12" in capsys.readouterr().out
    _, meta = read_checkpoint(dst)
    assert (meta["variant"], meta["fused"]) == ("fastvit_sa12", "false")
    assert same_state(fastvit.create_model("fastvit_sa12", checkpoint=dst), model)
    fused_dst = tmp_path / "fused.safetensors"
    assert cli_main(["convert", str(src), str(fused_dst), "--fuse"]) == 0
    state, meta = read_checkpoint(fused_dst)
    assert meta["fused"] == "true"
    inference = fastvit.create_model("fastvit_sa12", inference_mode=True, checkpoint=fused_dst)
    assert same_state(inference, state) and same_state(inference, fused)
    assert relative_difference(fused, inference) == 0.0


def test_convert_ema_and_strip_classifier(trained, tmp_path):
    model, _ = trained["fastvit_t8"]
    ema_source = random_model("fastvit_t8", seed=5)
    src = tmp_path / "train.pt"
    torch.save({"model": model.state_dict(), "ema": ema_source.state_dict()}, src)
    dst = tmp_path / "ema.safetensors"
    assert cli_main(["convert", str(src), str(dst), "--ema", "--num-classes", "0"]) == 0
    state, meta = read_checkpoint(dst)
    assert meta["num_classes"] == "0" and "head.fc.weight" not in state
    assert torch.equal(state["stem.0.conv_kxk.0.conv.weight"],
                       ema_source.stem[0].conv_kxk[0].conv.weight)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastvit convert: error:") and "\n" not in err, err
    return err


def test_convert_bad_inputs_exit_2(trained, tmp_path, capsys):
    dst = str(tmp_path / "out.safetensors")
    assert cli_main(["convert", str(tmp_path / "missing.pth"), dst]) == 2
    assert "not found" in _one_line_error(capsys)
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    assert cli_main(["convert", str(tmp_path / "foreign.pth"), dst]) == 2
    assert "not a FastViT state dict" in _one_line_error(capsys)
    model, _ = trained["fastvit_t8"]
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("stages.3")}
    torch.save(partial, tmp_path / "partial.pth")
    assert cli_main(["convert", str(tmp_path / "partial.pth"), dst]) == 2
    assert "--model" in _one_line_error(capsys)
    torch.save(model.state_dict(), tmp_path / "t8.pth")
    assert cli_main(["convert", str(tmp_path / "t8.pth"), str(tmp_path / "out.pt")]) == 2
    assert ".safetensors" in _one_line_error(capsys)
    assert cli_main(["convert", str(tmp_path / "t8.pth"), dst, "--num-classes", "5"]) == 2
    assert "1000-class" in _one_line_error(capsys)
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_wrong_model_gives_one_line(trained, tmp_path, capsys):
    model, _ = trained["fastvit_t8"]
    torch.save(model.state_dict(), tmp_path / "t8.pth")
    dst = tmp_path / "out.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli_main(["convert", str(tmp_path / "t8.pth"), str(dst), "--model", "fastvit_s12"])
    assert code == 2
    captured = capsys.readouterr().err
    assert captured.startswith("fastvit convert: error:") and "fastvit_t8" in captured
    assert not dst.exists()
