r"""Evaluation loaders that shard a dataset across ranks without padding.

``torch.utils.data.DistributedSampler`` pads the dataset to a multiple of the
world size by repeating samples, which double counts them in accuracy. For
evaluation every sample must be seen exactly once across all ranks, so
:class:`ShardedEvalSampler` gives rank ``r`` the indices ``r, r + W, r + 2W, ...``
(shards differ in length by at most one) and metrics are summed, not averaged.

Loaders of training runs are :class:`SignalSafeLoader`\s: their workers survive the
signals that make a run checkpoint and stop.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from fastvit.data.datasets import collate_skip_bad
from fastvit.data.shards import ShardDataset

#: what schedulers send before they kill a job, and Ctrl-C (see fastvit.run.preemption)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1")
                     if hasattr(signal, name))
#: a worker can tell who sent SIGTERM (Linux; not macOS or Windows)
_SENDER_CHECK = hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask")


class SignalSafeLoader(DataLoader):
    """A ``DataLoader`` whose worker processes survive the stop signals.

    The training process turns SIGTERM/SIGINT/SIGUSR1 into "finish the step,
    checkpoint, exit" (:mod:`fastvit.run.preemption`). The signals also reach
    its loader workers (Ctrl-C and torchrun signal the whole process group,
    SLURM every process of the job), and a worker killed by one makes the
    DataLoader raise in the main process in the middle of that step or of an
    evaluation. So the workers run :func:`leave_stop_signals_to_parent`, and are
    forked with SIGTERM blocked, which makes every thread they have or start
    (OpenMP pools included) leave SIGTERM to the one thread that checks its
    sender. That needs the ``fork`` start method (Linux's default, what the
    trainers use): a ``forkserver``/``spawn`` worker has threads from before its
    init function, so there only SIGINT and SIGUSR1 are ignored and SIGTERM keeps
    PyTorch's behaviour.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("num_workers", 0) and kwargs.get("worker_init_fn") is None:
            # this process owns the workers; the sender check needs forked workers
            kwargs["worker_init_fn"] = partial(leave_stop_signals_to_parent, owner=os.getpid(),
                                               check_sender=_forks(kwargs))
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Any:
        if not self.num_workers or not _SENDER_CHECK or not _forks(
                {"multiprocessing_context": self.multiprocessing_context}):
            return super().__iter__()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:  # workers fork here (the first time, for persistent ones) and inherit the mask
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _forks(kwargs: dict[str, Any]) -> bool:
    """Whether the loader's workers are forked from this process."""
    import multiprocessing

    context = kwargs.get("multiprocessing_context")
    if isinstance(context, str):
        return context == "fork"
    method = (context.get_start_method() if context is not None
              else multiprocessing.get_start_method(allow_none=True) or "fork")
    return method == "fork"


def leave_stop_signals_to_parent(worker_id: int | None = None, *,
                                 owner: int | None = None, check_sender: bool = True) -> None:
    """DataLoader ``worker_init_fn``: ignore SIGINT and SIGUSR1, and obey SIGTERM only
    from ``owner`` (the process whose DataLoader or ``multiprocessing`` shuts the worker
    down; default: the parent), as PyTorch's own worker handler does for its parent;
    any other SIGTERM is left to the owner. A worker still exits when its owner dies
    (the DataLoader's watchdog). Where the sender cannot be known (no ``sigwaitinfo``),
    SIGTERM keeps its effect."""
    for sig in STOP_SIGNALS:
        if sig != signal.SIGTERM:
            signal.signal(sig, signal.SIG_IGN)
    if not (_SENDER_CHECK and check_sender):
        return
    owner = os.getppid() if owner is None else owner
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later too
    threading.Thread(target=_exit_on_sigterm_from, args=(owner,), daemon=True,
                     name="fastvit-sigterm").start()


def _exit_on_sigterm_from(owner: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == owner:
            os._exit(0)


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
    WebDataset shards split themselves across ranks and workers (in order, no padding).
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if isinstance(dataset, ShardDataset):
        dataset = copy.copy(dataset)
        dataset.batch_size = None  # an in-order evaluation pass
        dataset.rank, dataset.world_size = dist_rank_world() if distributed else (0, 1)
        return SignalSafeLoader(dataset, batch_size=batch_size, num_workers=workers,
                                collate_fn=collate_skip_bad, pin_memory=pin_memory,
                                persistent_workers=False, drop_last=False)
    sampler = ShardedEvalSampler(dataset) if distributed else None
    return SignalSafeLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
                            num_workers=workers, collate_fn=collate_skip_bad,
                            pin_memory=pin_memory, persistent_workers=False, drop_last=False)
