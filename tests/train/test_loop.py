"""The training loop in-process: bad input (NaN loss, foreign checkpoints, bad folders),
fine-tuning, AMP/channels_last/accumulation smoke and checkpoint contents."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch

from fastvit.errors import CheckpointError, ConfigError, DataError
from fastvit.run.sampling import ResumableEpochSampler
from fastvit.run.store import DivergedError, checkpoint_name, list_checkpoints, save_checkpoint
from fastvit.train.trainer import build_model, fit
from tests.helpers.training import TEST_DEVICE, load_state, make_image_folder, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


class _Colours(torch.utils.data.Dataset):
    """In-memory 3-class images; ``poison`` indices return NaN pixels."""

    def __init__(self, n: int = 24, poison: frozenset[int] = frozenset()) -> None:
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 3
        self.images = torch.randn(n, 3, 32, 32, generator=g) * 0.1
        self.images[:, 0] += self.labels.view(-1, 1, 1).float()
        self.poison = poison

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i].clone()
        if i in self.poison:
            image.fill_(float("nan"))
        return image, int(self.labels[i])


def _datasets(poison: frozenset[int] = frozenset()):
    return _Colours(24, poison), _Colours(9), ["a", "b", "c"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path / "out", "unused", **{"run.save_every_steps": 1,
                                                   "data.mixup": 0, "data.cutmix": 0})
    order = ResumableEpochSampler(range(24), 4, seed=cfg.run.seed)
    order.set_epoch(0)
    first_of_step3 = list(order)[8][0]  # the sample that opens step 3 of epoch 0
    with pytest.raises(DivergedError, match=r"non-finite loss .* at step 3 "):
        fit(cfg, datasets=_datasets(frozenset({first_of_step3})))
    assert [s for s, _ in list_checkpoints(cfg.run.out_dir)] == [1, 2]
    kept = tmp_path / "out" / checkpoint_name(2)
    digest = _sha(kept)
    state = load_state(kept)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    # resuming hits the same batch again: the error repeats, the good checkpoint is untouched
    with pytest.raises(DivergedError, match="at step 3 "):
        fit(cfg, resume="auto", datasets=_datasets(frozenset({first_of_step3})))
    assert _sha(kept) == digest
    assert [s for s, _ in list_checkpoints(cfg.run.out_dir)] == [1, 2]


def test_checkpoint_writer_refuses_nonfinite_weights(tmp_path):
    good = {"model": {"w": torch.ones(2)}, "step": 1}
    path = save_checkpoint(good, tmp_path, 1, keep_last=3)
    digest = _sha(path)
    bad = {"model": {"w": torch.tensor([1.0, float("nan")])}, "step": 1}
    with pytest.raises(DivergedError, match="not finite"):
        save_checkpoint(bad, tmp_path, 1, keep_last=3)
    assert _sha(path) == digest
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_resume_from_another_variant_or_recipe_is_refused(tmp_path):
    cfg = tiny_config(tmp_path / "out", "unused", **{"run.max_steps": 1})
    summary = fit(cfg, datasets=_datasets())
    assert summary["stopped"] and summary["step"] == 1
    other = tiny_config(tmp_path / "out", "unused", **{"model.variant": "fastvit_t12",
                                                      "optim.weight_decay": 0.01})
    with pytest.raises(ConfigError) as err:
        fit(other, resume="auto", datasets=_datasets())
    text = str(err.value)
    assert "model.variant: checkpoint 'fastvit_t8', this run 'fastvit_t12'" in text
    assert "optim.weight_decay" in text and "run.out_dir" not in text
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        fit(cfg, resume=str(tmp_path / "nope.pt"), datasets=_datasets())


def test_data_errors_surface_before_anything_is_written(tmp_path):
    root = make_image_folder(tmp_path / "data", num_classes=2, train_per_class=2,
                             val_per_class=1)
    (root / "val" / "c1").rename(root / "val" / "other")
    cfg = tiny_config(tmp_path / "out", root)
    with pytest.raises(DataError, match="class folders differ"):
        fit(cfg)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        fit(tiny_config(tmp_path / "out", empty))
    assert not (tmp_path / "out").exists()


def test_fine_tune_from_checkpoint_with_a_new_classifier(tmp_path):
    from fastvit.checkpoints import save_checkpoint as save_weights
    from fastvit.factory import create_model
    from fastvit.models.reparam import reparameterize

    source = create_model("fastvit_t8", num_classes=5)
    save_weights(source, tmp_path / "t8_5.safetensors")
    cfg = tiny_config(tmp_path / "out", "unused",
                      **{"model.pretrained": tmp_path / "t8_5.safetensors"})
    with pytest.raises(ConfigError, match="5-class classifier .* --reset-classifier"):
        build_model(cfg, num_classes=3)
    cfg.model.reset_classifier = True
    model = build_model(cfg, num_classes=3)
    assert model.head.fc.out_features == 3
    key = "stem.0.conv_kxk.0.conv.weight"
    assert torch.equal(model.state_dict()[key], source.state_dict()[key])
    save_weights(reparameterize(source), tmp_path / "fused.safetensors")
    cfg.model.pretrained = str(tmp_path / "fused.safetensors")
    with pytest.raises(CheckpointError, match="fused"):
        build_model(cfg, num_classes=3)


def test_bf16_channels_last_accumulation_and_clipping_smoke(tmp_path):
    cfg = tiny_config(tmp_path / "out", "unused", **{
        "run.amp": "bf16", "run.channels_last": True, "optim.global_batch": 8,
        "optim.clip_grad": 1.0, "run.max_steps": 2, "run.deterministic": False})
    summary = fit(cfg, datasets=_datasets())
    state = load_state(tmp_path / "out" / checkpoint_name(2))
    assert summary["stopped"] and state["step"] == 2 and state["batch_in_epoch"] == 4
    assert state["metadata"]["global_batch"] == 8
    assert state["metadata"]["class_names"] == ["a", "b", "c"]
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    # the checkpoint is a plain dict: loads with weights_only and through fastvit.checkpoints
    from fastvit.checkpoints import read_checkpoint

    weights, meta = read_checkpoint(tmp_path / "out" / checkpoint_name(2), use_ema=True)
    assert meta["variant"] == "fastvit_t8" and "head.fc.weight" in weights


def test_fp16_on_cpu_is_a_config_error(tmp_path):
    cfg = tiny_config(tmp_path / "out", "unused", **{"run.amp": "fp16", "run.device": "cpu"})
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA device"):
        fit(cfg, datasets=_datasets())


@pytest.mark.slow
def test_unreadable_images_are_logged_once_counted_and_listed(tmp_path, caplog, recwarn):
    root = make_image_folder(tmp_path / "data", num_classes=2, train_per_class=4,
                             val_per_class=1)
    bad_train = root / "train" / "c0" / "broken.png"
    bad_train.write_bytes(b"not a png")
    bad_val = root / "val" / "c1" / "cut.png"
    bad_val.write_bytes((root / "val" / "c1" / "0.png").read_bytes()[:60])  # truncated PNG
    lines: list[str] = []
    cfg = tiny_config(tmp_path / "out", root, **{"schedule.epochs": 2,
                                                 "schedule.warmup_epochs": 0})
    with caplog.at_level(logging.WARNING, logger="fastvit"):
        fit(cfg, log=lines.append)
    # one line per file, the first time it is met (the val split is read every epoch) ...
    per_file = [r.getMessage() for r in caplog.records if "skipping unreadable" in r.getMessage()]
    assert sorted(m.split()[3] for m in per_file) == sorted([str(bad_train), str(bad_val)])
    # ... not Python warnings echoing DataLoader source lines
    assert not [w for w in recwarn if "unreadable" in str(w.message)]
    # a count per epoch, and the whole list with reasons next to the checkpoints
    listed = tmp_path / "out" / "skipped_images.txt"
    for epoch in (1, 2):
        assert (f"warning: skipped 1 unreadable image(s) in epoch {epoch} (all of them: "
                f"{listed})") in lines
    assert sum("unreadable val image(s) skipped" in line for line in lines) == 2
    rows = [line.split("\t") for line in listed.read_text().splitlines()]
    assert sorted(path for path, _ in rows) == sorted([str(bad_train), str(bad_val)])
    assert all(reason for _, reason in rows)
    cfg.data.bad_images = "error"
    cfg.run.out_dir = str(tmp_path / "out2")
    with pytest.raises(DataError, match="broken.png"):
        fit(cfg)


@pytest.mark.slow
def test_best_weights_are_exported_for_validate(tmp_path):
    from fastvit.checkpoints import class_names_from_metadata, read_checkpoint

    cfg = tiny_config(tmp_path / "out", "unused", **{"schedule.epochs": 1,
                                                   "schedule.warmup_epochs": 0})
    summary = fit(cfg, datasets=_datasets())
    weights, meta = read_checkpoint(summary["best_weights"])
    assert meta["variant"] == "fastvit_t8" and meta["weights"] == "ema"
    assert class_names_from_metadata(meta) == ["a", "b", "c"]
    state = load_state(summary["best_checkpoint"])
    assert set(weights) == set(state["ema"])
    assert all(torch.equal(weights[k], v) for k, v in state["ema"].items())
    _, train_meta = read_checkpoint(summary["best_checkpoint"], use_ema=True)
    assert class_names_from_metadata(train_meta) == ["a", "b", "c"]


@pytest.mark.skipif(not TEST_DEVICE.startswith("cuda"), reason="fp16 + GradScaler need CUDA "
                    "(FASTVIT_TRAIN_TEST_DEVICE=cuda)")
def test_fp16_gradscaler_channels_last_and_resume_on_cuda(tmp_path):
    overrides = {"run.amp": "fp16", "run.channels_last": True, "run.max_steps": 3,
                 "run.deterministic": False}
    fit(tiny_config(tmp_path / "out", "unused", **overrides), datasets=_datasets())
    state = load_state(tmp_path / "out" / checkpoint_name(3))
    assert state["scaler"]["scale"] > 0  # the GradScaler state travels with the checkpoint
    overrides["run.max_steps"] = None
    summary = fit(tiny_config(tmp_path / "out", "unused", **overrides), resume="auto",
                  datasets=_datasets())
    assert summary["step"] == 12 and summary["last_eval"]["model"]["count"] == 9
