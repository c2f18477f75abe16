"""Units of the training stack: lr scaling, weight-decay groups, EMA, distillation,
gradient accumulation, samplers and per-sample seeding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvit.data import Batch
from fastvit.errors import ConfigError
from fastvit.factory import create_model
from fastvit.run.distributed import DistEnv
from fastvit.run.loop import Progress, StepOutput, TrainParts, train_epoch
from fastvit.run.optim import (
    no_decay_parameter_names,
    param_groups,
    scaled_lr,
)
from fastvit.run.sampling import ResumableEpochSampler, SeededDataset
from fastvit.run.seeding import derive_seed
from fastvit.train.distill import (
    DistillationLoss,
    hard_distillation_term,
    soft_distillation_term,
)
from fastvit.train.ema import build_ema

# -- learning rate -------------------------------------------------------------------------------


def test_linear_scaling_rule():
    assert scaled_lr(1e-3, 1024, 1024) == pytest.approx(1e-3)
    assert scaled_lr(1e-3, 256, 1024) == pytest.approx(2.5e-4)
    assert scaled_lr(5e-5, 512, 512) == pytest.approx(5e-5)


# -- weight decay groups -------------------------------------------------------------------------


def test_weight_decay_groups_on_fastvit():
    model = create_model("fastvit_sa12", num_classes=10)
    skip = no_decay_parameter_names(model)
    names = dict(model.named_parameters())
    # biases, BatchNorm weights and layer-scale gammas get no decay...
    assert "head.fc.bias" in skip
    assert "stages.0.blocks.0.token_mixer.layer_scale.gamma" in skip
    assert "stages.3.blocks.0.layer_scale_1.gamma" in skip
    assert "stem.0.conv_kxk.0.bn.weight" in skip
    assert "stages.3.pos_emb.pos_enc.bias" in skip
    assert all(n in skip for n, p in names.items() if n.endswith(".bias") or p.ndim <= 1)
    # ...conv, attention and linear weights do.
    for decayed in ("head.fc.weight", "stem.0.conv_kxk.0.conv.weight",
                    "stages.3.blocks.0.token_mixer.qkv.weight",
                    "stages.0.blocks.0.mlp.fc1.weight", "stages.3.pos_emb.pos_enc.weight"):
        assert decayed in names and decayed not in skip, decayed
    groups = param_groups(model, 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(names)
    assert len(groups[1]["params"]) == len(skip)
    # the official timm optimizer decays the (C, 1, 1) gammas: available as an option
    with_gamma = no_decay_parameter_names(model, decay_layer_scale=True)
    assert "stages.3.blocks.0.layer_scale_1.gamma" not in with_gamma


# -- EMA -----------------------------------------------------------------------------------------


def test_ema_update_values_include_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = build_ema(model, decay=0.9)
    ema.update_parameters(model)  # first update copies
    w0 = model[0].weight.detach().clone()
    assert torch.equal(ema.module[0].weight, w0)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module[0].weight, 0.9 * w0 + 0.1 * 1.0, atol=1e-7)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 0.2), atol=1e-7)
    ema.update_parameters(model)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 0.38), atol=1e-7)
    assert not any(p.requires_grad for p in ema.parameters())


# -- distillation --------------------------------------------------------------------------------


def test_hard_distillation_on_known_logits():
    student = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]])  # argmax: 1, 0
    # -log softmax(student)[argmax teacher]: log(e^2 + 2) - 0 and log(e + 2) - 0
    expected = (math.log(math.e ** 2 + 2) + math.log(math.e + 2)) / 2
    assert float(hard_distillation_term(student, teacher)) == pytest.approx(expected, rel=1e-6)
    labels = torch.tensor([0, 1])
    base = float(F.cross_entropy(student, labels))
    loss = DistillationLoss(lambda s, t: F.cross_entropy(s, t), lambda x: teacher, "hard", 0.5)
    value = float(loss(torch.zeros(2, 1), student, labels))
    assert value == pytest.approx(0.5 * base + 0.5 * expected, rel=1e-6)


def test_soft_distillation_value():
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    t = 2.0

    def softmax(row):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p, q = softmax(t_row), softmax(s_row)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = kl / 2 * t * t
    assert float(soft_distillation_term(student, teacher, t)) == pytest.approx(expected, rel=1e-6)
    assert float(soft_distillation_term(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)


def test_teacher_from_torchvision_and_fastvit_files(tmp_path):
    import torchvision

    from fastvit.checkpoints import save_checkpoint
    from fastvit.train.distill import build_teacher

    tv = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=3).eval()
    torch.save(tv.state_dict(), tmp_path / "mnv3.pt")
    teacher = build_teacher("mobilenet_v3_small", tmp_path / "mnv3.pt", 3)
    x = torch.randn(2, 3, 64, 64)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert torch.allclose(teacher(x), tv(x), atol=1e-6)

    fv = create_model("fastvit_t8", num_classes=3).eval()
    save_checkpoint(fv, tmp_path / "t8.safetensors")
    fused_teacher = build_teacher("fastvit_t8", tmp_path / "t8.safetensors", 3)
    assert torch.allclose(fused_teacher(x), fv(x), atol=1e-4)

    with pytest.raises(ConfigError, match="unknown teacher"):
        build_teacher("not_a_model", tmp_path / "mnv3.pt", 3)
    with pytest.raises(ConfigError, match="not found"):
        build_teacher("resnet18", tmp_path / "missing.pt", 3)


# -- gradient accumulation -----------------------------------------------------------------------


def _one_step(batches: list[Batch], accum: int) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    parts = TrainParts(model, model, opt, sched, torch.amp.GradScaler("cpu", enabled=False),
                       DistEnv(), accum=accum)

    def step_fn(batch: Batch) -> StepOutput:
        if batch.images is None:
            return StepOutput(None, 0, batch.skipped)
        return StepOutput({"loss": F.cross_entropy(model(batch.images), batch.targets)},
                          batch.images.shape[0], batch.skipped)

    before = [p.detach().clone() for p in model.parameters()]
    train_epoch(parts, batches, Progress(), step_fn, on_step=lambda p, s: False)
    # SGD with lr 1: the update is minus the gradient of the optimizer step
    return torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters(),
                                                                   strict=True)])


def test_gradient_accumulation_matches_the_full_batch():
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    full = _one_step([Batch(images, labels, ())], accum=1)
    halves = _one_step([Batch(images[:4], labels[:4], ()), Batch(images[4:], labels[4:], ())],
                       accum=2)
    assert full.abs().max() > 1e-3  # a real update happened
    torch.testing.assert_close(halves, full, rtol=1e-5, atol=1e-6)
    # and a wrong accumulation (no averaging over micro-batches) would not match
    doubled = _one_step([Batch(images[:4], labels[:4], ()), Batch(images[4:], labels[4:], ())],
                        accum=1)
    assert not torch.allclose(doubled, full, atol=1e-4)


# -- sampling and seeding ------------------------------------------------------------------------


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    data = list(range(22))
    sampler = ResumableEpochSampler(data, batch_size=4, seed=3, batch_multiple=2)
    assert sampler.usable_batches == 4  # 5 full batches, trimmed to whole accumulation groups
    sampler.set_epoch(1)
    full = list(sampler)
    assert len(full) == 16 == len(sampler)
    sampler.set_epoch(1, start_batch=3)
    assert list(sampler) == full[12:] and len(sampler) == 4
    again = ResumableEpochSampler(data, batch_size=4, seed=3, batch_multiple=2)
    again.set_epoch(1)
    assert list(again) == full
    again.set_epoch(2)
    assert [i for i, _ in again] != [i for i, _ in full]
    shards = []
    for rank in range(2):
        s = ResumableEpochSampler(data, batch_size=4, seed=3, rank=rank, world_size=2)
        s.set_epoch(0)
        shards.append({i for i, _ in s})
    assert not shards[0] & shards[1]
    assert derive_seed(3, 1, 5) != derive_seed(3, 5, 1)


class _RandomPixels(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return torch.rand(3), index


def test_seeded_dataset_repeats_draws_and_leaves_global_rng_alone():
    ds = SeededDataset(_RandomPixels())
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = ds[(2, 77)]
    b, _ = ds[(2, 77)]
    c, _ = ds[(2, 78)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's stream is untouched


def test_channels_last_guard_keeps_cpu_backward_alive():
    """CPU channels_last backward of FastViT's strided 1x1 stem conv crashes torch 2.14 at
    >= 128 px; the trainer's conversion must avoid it (run in a child: a crash is a segfault)."""
    import subprocess
    import sys

    script = (
        "import torch, fastvit\n"
        "from fastvit.train.memory_format import to_channels_last\n"
        "torch.set_num_threads(1)\n"
        "m = to_channels_last(fastvit.create_model('fastvit_t8', num_classes=2), 'cpu')\n"
        "x = torch.randn(1, 3, 128, 128).contiguous(memory_format=torch.channels_last)\n"
        "m(x).sum().backward()\n"
        "print(m.stem[0](x).is_contiguous(memory_format=torch.channels_last))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"  # the rest of the network still runs channels_last


def test_default_workers_follow_the_machine(monkeypatch):
    from fastvit.run import device

    for cores, processes, expected in ((2, 1, 1), (1, 1, 0), (16, 1, 8), (16, 4, 3),
                                       (64, 8, 7)):
        monkeypatch.setattr(device.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert device.default_workers(processes) == expected, (cores, processes)
