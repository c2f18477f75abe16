"""DataLoader workers and stop signals: a worker signalled by someone else (a terminal's
Ctrl-C, torchrun's or SLURM's signal to every process) keeps serving the main process,
which turns the signal into a checkpoint; its parent can still stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fastvit.data.loaders import STOP_SIGNALS, SignalSafeLoader


class _Slow(Dataset):
    """The main process always waits on the worker (the data-bound case)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(0.02)
        return torch.tensor(i)


def _external_kill(pid: int, sig: int) -> None:
    """Send ``sig`` from another process (the parent's own signals mean "shut down")."""
    subprocess.run(["kill", "-s", signal.Signals(sig).name[3:], str(pid)], check=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shield", [True, False], ids=["shielded", "torch-default"])
def test_worker_survives_stop_signals_from_others(shield):
    # two intra-op threads in the parent: the worker then starts an OpenMP thread before
    # worker_init_fn runs, which must not take SIGTERM either
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    loader = (SignalSafeLoader if shield else DataLoader)(_Slow(), batch_size=2, num_workers=1)
    try:
        it = iter(loader)
    finally:
        torch.set_num_threads(threads)
    seen = [int(x) for x in next(it)]
    (worker,) = [w.pid for w in it._workers]
    for sig in STOP_SIGNALS:
        _external_kill(worker, sig)
    if not shield:  # the control: PyTorch's default worker dies, the loader raises
        with pytest.raises(RuntimeError, match="DataLoader worker"):
            list(it)
        return
    for batch in it:
        seen += [int(x) for x in batch]
    assert seen == list(range(40))
    del it
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the worker outlived its DataLoader"


@pytest.mark.timeout(60)
def test_parent_sigterm_still_ends_a_worker():
    """``multiprocessing`` ends daemonic workers with SIGTERM (``terminate()``) at exit;
    and the parent's own signal mask is as it was."""
    loader = SignalSafeLoader(_Slow(), batch_size=2, num_workers=1, persistent_workers=True)
    it = iter(loader)
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    next(it)
    (proc,) = it._workers
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(10)
    assert proc.exitcode == 0
    it._shutdown_workers()


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_forkserver_workers_ignore_sigint_and_their_owner_still_ends_them():
    """A forkserver worker has threads from before its init function, so only the
    process-wide dispositions apply: SIGINT/SIGUSR1 ignored, SIGTERM as PyTorch has it."""
    loader = SignalSafeLoader(list(range(8)), batch_size=2, num_workers=1,
                              persistent_workers=True, multiprocessing_context="forkserver")
    it = iter(loader)
    assert [int(x) for x in next(it)] == [0, 1]
    (proc,) = it._workers
    _external_kill(proc.pid, signal.SIGINT)
    _external_kill(proc.pid, signal.SIGUSR1)
    time.sleep(0.5)
    assert _alive(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(10)
    assert proc.exitcode is not None
    it._shutdown_workers()
