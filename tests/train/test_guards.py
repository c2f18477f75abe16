"""Guards on the classification trainer's wiring (``fastvit.train.trainer.fit``): the
distillation loss, linear lr scaling, best-checkpoint bookkeeping, checkpoint rotation and
the gradient-checkpointing recipe flag. Each check reads what a run produced (its logged
loss, its checkpoints) so that a restructured trainer that drops a piece fails here."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import fastvit
from fastvit.run.metrics_log import read_metrics
from fastvit.run.store import checkpoint_name, list_checkpoints
from fastvit.train.trainer import fit
from tests.helpers.training import load_state, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["a", "b", "c"]


class _Colours(torch.utils.data.Dataset):
    """In-memory 3-class 32 px images (tensors: no augmentation pipeline)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.images = torch.randn(n, 3, 32, 32, generator=g) * 0.5
        self.images[:, 0] += self.labels.view(-1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i].clone(), int(self.labels[i])

    def labels_of(self, images: torch.Tensor) -> torch.Tensor:
        """The label of each image of a batch, found by exact pixel equality."""
        out = []
        for image in images:
            (hits,) = [i for i in range(len(self)) if torch.equal(self.images[i], image)]
            out.append(int(self.labels[hits]))
        return torch.tensor(out)


def _datasets(n_train: int = 24, n_val: int = 6):
    return _Colours(n_train), _Colours(n_val, seed=1), list(CLASSES)


def _train_records(out_dir) -> list[dict]:
    return [r for r in read_metrics(out_dir / "metrics.jsonl") if r["kind"] == "train"]


# -- 1. hard distillation -----------------------------------------------------------------

EXACT_TARGETS = {"data.mixup": 0, "data.cutmix": 0, "data.label_smoothing": 0,
                 "data.random_erasing": 0, "data.randaugment_magnitude": 0}


def _first_step_with_teacher(tmp_path, name: str, teacher_path, datasets):
    """Run one optimizer step with hard distillation; return the logged step-1 loss and
    the student's input batch and logits (a global forward hook: the student is the
    FastVit in train mode; the frozen teacher runs in eval mode)."""
    cfg = tiny_config(tmp_path / name, "unused", **EXACT_TARGETS, **{
        "distill.kind": "hard", "distill.teacher": "fastvit_t8",
        "distill.teacher_weights": teacher_path, "distill.alpha": 0.5,
        "run.max_steps": 1})
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module, args, output):
        if isinstance(module, fastvit.FastVit) and module.training and not seen:
            seen.append((args[0].detach().clone(), output.detach().clone()))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        summary = fit(cfg, datasets=datasets)
    finally:
        handle.remove()
    assert summary["stopped"] and summary["step"] == 1 and seen
    (record,) = [r for r in _train_records(tmp_path / name) if r["step"] == 1]
    images, logits = seen[0]
    return record["loss"], images, logits


def _teacher_targets(teacher: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return teacher.eval()(images).argmax(dim=1)


def test_hard_distillation_loss_is_half_labels_half_teacher_argmax(tmp_path):
    torch.manual_seed(1)
    teacher = fastvit.create_model("fastvit_t8", num_classes=3)
    with torch.no_grad():  # spread the classifier so the teacher's argmax depends on the image
        teacher.head.fc.weight.normal_(0.0, 1.0)
    path_a = fastvit.save_checkpoint(teacher, tmp_path / "teacher_a.safetensors")
    datasets = _datasets()
    train = datasets[0]

    loss_a, images, logits = _first_step_with_teacher(tmp_path, "a", path_a, datasets)
    labels = train.labels_of(images)
    teacher_a = _teacher_targets(teacher, images)
    plain = F.cross_entropy(logits, labels).item()
    expected_a = (0.5 * F.cross_entropy(logits, labels)
                  + 0.5 * F.cross_entropy(logits, teacher_a)).item()
    assert loss_a == pytest.approx(expected_a, rel=1e-5, abs=1e-6)

    # another teacher: same network, its bias pushes every prediction to class c
    c = (int(teacher_a[0]) + 1) % 3
    with torch.no_grad():
        teacher.head.fc.bias[c] += 100.0
    path_b = fastvit.save_checkpoint(teacher, tmp_path / "teacher_b.safetensors")
    loss_b, images_b, logits_b = _first_step_with_teacher(tmp_path, "b", path_b, datasets)
    assert torch.equal(images_b, images)  # same data, seed and student: only the teacher moved
    teacher_b = _teacher_targets(teacher, images)
    assert (teacher_b == c).all() and (teacher_b != teacher_a).any()
    expected_b = (0.5 * F.cross_entropy(logits_b, labels)
                  + 0.5 * F.cross_entropy(logits_b, teacher_b)).item()
    assert loss_b == pytest.approx(expected_b, rel=1e-5, abs=1e-6)
    assert abs(loss_b - loss_a) > 1e-3, "the loss does not depend on the teacher's weights"
    # the check means something: without the teacher the loss would be CE(labels) alone
    assert max(abs(loss_a - plain), abs(loss_b - plain)) > 1e-3


# -- 2. linear lr scaling -----------------------------------------------------------------


def test_peak_lr_is_scaled_by_global_batch_over_base_batch(tmp_path):
    # per-process batch 4, accumulated to a global batch of 8, recipe lr given at batch 2:
    # peak lr = 1e-4 * 8 / 2 = 4e-4 (unscaled: 1e-4; scaled by the per-process batch: 2e-4)
    cfg = tiny_config(tmp_path / "out", "unused", **{
        "optim.lr": "null", "optim.lr_base": 1e-4, "optim.lr_base_batch": 2,
        "optim.global_batch": 8,
        "data.batch_size": 4, "schedule.warmup_epochs": 0, "run.max_steps": 1})
    fit(cfg, datasets=_datasets())
    peak = 1e-4 * 8 / 2
    state = load_state(tmp_path / "out" / checkpoint_name(1))
    assert state["metadata"]["global_batch"] == 8
    for group in state["optimizer"]["param_groups"]:
        assert group["initial_lr"] == pytest.approx(peak, rel=1e-12)
    assert state["scheduler"]["base_lrs"] == pytest.approx([peak, peak], rel=1e-12)
    # no warmup: the first step runs at the peak lr (logged before the scheduler steps)
    (first,) = [r for r in _train_records(tmp_path / "out") if r["step"] == 1]
    assert first["lr"] == pytest.approx(peak, rel=1e-12)


# -- 3. best checkpoint and rotation ------------------------------------------------------

SCRIPTED_TOP1 = [50.0, 80.0, 60.0]  # per epoch: the best is epoch 2, not the last


@pytest.mark.slow
def test_best_checkpoint_is_the_argmax_epoch_and_keep_last_rotates(tmp_path, monkeypatch):
    calls: list[int] = []

    def scripted_evaluate(model, loader, **kwargs):
        epoch = len(calls) // 2  # the trainer scores the model, then its EMA, each epoch
        calls.append(epoch)
        return {"top1": SCRIPTED_TOP1[epoch], "top5": 100.0, "loss": 1.0, "count": 6}

    # monkeypatched: fastvit.train.trainer.evaluate_classifier (what the trainer runs per epoch)
    monkeypatch.setattr("fastvit.train.trainer.evaluate_classifier", scripted_evaluate)
    keep = 4
    cfg = tiny_config(tmp_path / "out", "unused", **{
        "schedule.epochs": 3, "schedule.warmup_epochs": 0, "run.save_every_steps": 1,
        "run.keep_last": keep})
    summary = fit(cfg, datasets=_datasets(n_train=12))  # 3 steps per epoch, 9 in all
    out = tmp_path / "out"
    assert calls == [0, 0, 1, 1, 2, 2] and summary["step"] == 9
    assert summary["best_top1"] == 80.0

    assert [s for s, _ in list_checkpoints(out)] == [6, 7, 8, 9]  # exactly the newest 4
    best = load_state(out / "best.pt")
    assert (best["epoch"], best["step"], best["metrics"]["ema"]["top1"]) == (2, 6, 80.0)
    epoch2, last = load_state(out / checkpoint_name(6)), load_state(out / checkpoint_name(9))
    for section in ("model", "ema"):
        assert all(torch.equal(best[section][k], v) for k, v in epoch2[section].items())
    assert not all(torch.equal(best["ema"][k], v) for k, v in last["ema"].items())

    weights, meta = fastvit.read_checkpoint(out / "best.safetensors")
    assert (meta["weights"], int(meta["epoch"]), float(meta["top1"])) == ("ema", 2, 80.0)
    assert set(weights) == set(epoch2["ema"])
    assert all(torch.equal(weights[k], v) for k, v in epoch2["ema"].items())
    history = json.loads((out / "summary.json").read_text())["history"]
    assert [h["ema_top1"] for h in history] == SCRIPTED_TOP1


# -- 4b. the recipe flag reaches the model --------------------------------------------------


def test_recipe_grad_checkpointing_flag_checkpoints_the_blocks(tmp_path):
    from fastvit.train.trainer import build_model
    from tests.helpers.spies import block_forward_counts

    for flag, expected in ((False, 1), (True, 2)):
        cfg = tiny_config(tmp_path / "out", "unused", **{"model.grad_checkpointing": flag,
                                                       "model.drop_path": 0.0})
        model = build_model(cfg, num_classes=3)
        counts = block_forward_counts(model, torch.randn(2, 3, 32, 32))
        assert set(counts.values()) == {expected}, (flag, counts)
