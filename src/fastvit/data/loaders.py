"""Evaluation loaders that shard a dataset across ranks without padding.

``torch.utils.data.DistributedSampler`` pads the dataset to a multiple of the
world size by repeating samples, which double counts them in accuracy. For
evaluation every sample must be seen exactly once across all ranks, so
:class:`ShardedEvalSampler` gives rank ``r`` the indices ``r, r + W, r + 2W, ...``
(shards differ in length by at most one) and metrics are summed, not averaged.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from fastvit.data.datasets import collate_skip_bad


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialized process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedEvalSampler(Sampler[int]):
    """Strided, unpadded shard of ``range(len(dataset))`` for one rank."""

    def __init__(self, dataset: Dataset, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        default_rank, default_world = dist_rank_world()
        self.num_replicas = default_world if num_replicas is None else num_replicas
        self.rank = default_rank if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside 0..{self.num_replicas - 1}")
        self.total = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.total, self.num_replicas))


def build_eval_loader(dataset: Dataset, batch_size: int, workers: int = 0,
                      distributed: bool = False, pin_memory: bool | None = None) -> DataLoader:
    """A deterministic evaluation loader; with ``distributed`` each rank gets its shard.

    Batches are :class:`fastvit.data.Batch` (unreadable images dropped and listed).
    """
    sampler = ShardedEvalSampler(dataset) if distributed else None
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
                      num_workers=workers, collate_fn=collate_skip_bad, pin_memory=pin_memory,
                      persistent_workers=False, drop_last=False)
