"""``fastvit.run.evaluation``: the one place evaluators unwrap DDP and switch modes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastvit.run.evaluation import evaluation_mode, unwrap_parallel


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))


@pytest.mark.parametrize("training", [True, False])
def test_eval_inside_and_the_previous_mode_after(training):
    net = small_net().train(training)
    with evaluation_mode(net) as inner:
        assert inner is net
        assert not any(m.training for m in net.modules())
        x = torch.randn(3, 4)
        assert torch.equal(inner(x), inner(x))  # no dropout noise, running BN statistics
    assert all(m.training == training for m in net.modules())


def test_the_mode_comes_back_when_the_block_raises():
    net = small_net().train()
    with pytest.raises(RuntimeError, match="data went wrong"), evaluation_mode(net):
        raise RuntimeError("data went wrong")
    assert net.training and net[2].training


def test_data_parallel_wrappers_are_looked_through():
    net = small_net()
    wrapped = nn.DataParallel(nn.DataParallel(net))
    assert unwrap_parallel(wrapped) is net
    with evaluation_mode(wrapped) as inner:
        assert inner is net and not net.training
    assert net.training and wrapped.training


@pytest.mark.skipif(not dist.is_available() or dist.is_initialized(),
                    reason="needs torch.distributed and no process group yet")
def test_distributed_data_parallel_is_unwrapped(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        net = small_net()
        ddp = nn.parallel.DistributedDataParallel(net)
        with evaluation_mode(ddp) as inner:
            assert inner is net and not net.training
            inner(torch.randn(2, 4))  # a forward outside DDP: no reducer bookkeeping
        assert net.training
    finally:
        dist.destroy_process_group()
