"""torchrun integration: process-group setup, rank-0 gating, buffer and metric reduction.

``torchrun --nproc-per-node N -m fastvit train ...`` (or ``detect train``...)
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is a
single process. The backend is NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from fastvit.run.device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistEnv:
    """Join the torchrun process group if launched by torchrun (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend}
        if device.type == "cuda":
            kwargs["device_id"] = device
        store = _attempt_store(world)
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world)
        dist.init_process_group(**kwargs)
    return DistEnv(rank, world, local_rank, device)


def _attempt_store(world: int) -> dist.Store | None:
    """The store of this torchrun attempt, when the agent shares one store across restarts.

    By default torchrun's workers use the agent's own TCPStore, the same one after
    each ``--max-restarts`` restart, and ``init_process_group`` keys it by process
    group only: a restarted group can read its predecessor's keys (gloo peer
    addresses, NCCL ids) and fail to connect ("Connection refused";
    pytorch/pytorch#135712). Keys are put under ``attempt_<restart count>`` here;
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store per attempt) needs none.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          world_size=world, is_master=False,
                          timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"/fastvit/attempt_{attempt}", store)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_max(flag: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / env.world_size
    return values


@torch.no_grad()
def broadcast_buffers(module: nn.Module, env: DistEnv) -> None:
    """Give every rank rank 0's floating-point buffers (BatchNorm statistics).

    Called after each optimizer step, so model, EMA and checkpoint are the same
    on every rank at every step (DDP itself would only broadcast them at the
    next forward). One coalesced broadcast per call.
    """
    if not env.distributed:
        return
    buffers = [b for b in module.buffers() if torch.is_floating_point(b)]
    if not buffers:
        return
    flat = _flatten_dense_tensors(buffers)
    dist.broadcast(flat, src=0)
    for buf, synced in zip(buffers, _unflatten_dense_tensors(flat, buffers), strict=True):
        buf.copy_(synced)


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` (a small picklable value), in rank order."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_lists(items: list, env: DistEnv) -> list:
    """Concatenate the per-rank lists (rank order), on every rank."""
    return [x for part in gather_objects(items, env) for x in part]


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(model: nn.Module, env: DistEnv, **kwargs: Any) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` under torchrun, else ``model``."""
    if not env.distributed:
        return model
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)
