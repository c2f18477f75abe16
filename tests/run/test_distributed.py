"""torchrun integration details of ``fastvit.run.distributed``."""

from __future__ import annotations

from datetime import timedelta

import torch.distributed as dist

from fastvit.run.distributed import _attempt_store


def test_each_torchrun_attempt_gets_its_own_keys(monkeypatch):
    """With torchrun's shared store (its default), a restarted worker group must not
    read the keys (gloo peer addresses, NCCL ids) of the group before it."""
    server = dist.TCPStore("127.0.0.1", 0, world_size=1, is_master=True,
                           timeout=timedelta(seconds=30), wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    for attempt in ("0", "1"):
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", attempt)
        _attempt_store(2).set("rank_0", f"address of attempt {attempt}")
    assert server.get("/fastvit/attempt_0/rank_0") == b"address of attempt 0"
    assert server.get("/fastvit/attempt_1/rank_0") == b"address of attempt 1"
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # a fresh store per attempt
    assert _attempt_store(2) is None
