"""Stop signals: SIGTERM, SIGINT and SIGUSR1 end a run cleanly, with a checkpoint.

Cluster schedulers send SIGTERM (Kubernetes, SLURM at preemption and at the time
limit, ``torchrun`` forwarding its own), or a signal the job asks for such as
SIGUSR1 (``sbatch --signal``), some time before they kill a job; Ctrl-C is
SIGINT. While :func:`fastvit.run.epochs.run_epochs` runs, such a signal only raises a
flag: the optimizer step in progress finishes, a checkpoint is written
atomically, and :class:`~fastvit.errors.StoppedBySignal` ends the run (the CLI
exits with its code, 75, and says how to continue: ``--resume auto``).

Under torchrun the flag is all-reduced (MAX) after every optimizer step, so
every rank stops after the same step even when the signal reaches them at
different moments, or only one of them: no rank writes a checkpoint the others
never reached. A second Ctrl-C aborts at once (KeyboardInterrupt, no
checkpoint of the current step) in a plain process; under torchrun the agent
forwards one SIGINT to every worker and owns the escalation (its
``--shutdown-timeout``, then SIGKILL), so repeats are ignored there.

The handlers are installed for the duration of the run only, in the main
thread only, and the previous ones are restored afterwards. DataLoader workers
leave these signals to the main process
(:func:`fastvit.data.loaders.leave_stop_signals_to_parent`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import torch

from fastvit.data.loaders import STOP_SIGNALS
from fastvit.run.distributed import DistEnv, all_reduce_max

_log = logging.getLogger("fastvit.run")

#: set by torchrun in every worker it starts
ELASTIC_ENV = "TORCHELASTIC_RUN_ID"


class StopSignals:
    """Context manager turning :data:`STOP_SIGNALS` into a stop request.

    ``requested()`` is this process's flag; ``agreed()`` is the decision every
    rank shares (collective under DDP: every rank must call it at the same point).
    """

    def __init__(self, env: DistEnv) -> None:
        self.env = env
        self.received: int = 0
        self.abort_on_repeat = ELASTIC_ENV not in os.environ
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            _log.debug("not in the main thread: stop signals keep their current handlers")
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received:
            if signum == signal.SIGINT and self.abort_on_repeat:
                raise KeyboardInterrupt
            return
        self.received = signum
        if self.env.is_main:
            more = " (Ctrl-C again aborts without one)" if (
                signum == signal.SIGINT and self.abort_on_repeat) else ""
            # os.write: a print here could re-enter a write the signal interrupted
            os.write(2, f"\nfastvit: {name} received: stopping after the current optimizer "
                        f"step with a checkpoint{more}\n".encode())

    def requested(self) -> str | None:
        return signal.Signals(self.received).name if self.received else None

    def agreed(self) -> str | None:
        """The signal every rank stops for (the highest number any rank received), or None."""
        value = self.received
        if self.env.distributed:
            flag = torch.tensor([value], dtype=torch.int32, device=self.env.device)
            value = int(all_reduce_max(flag, self.env).item())
        return signal.Signals(value).name if value else None
