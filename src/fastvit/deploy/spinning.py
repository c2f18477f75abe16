"""Whether runtime thread pools may busy-wait (spin) between runs: the good-neighbour policy.

ONNX Runtime's intra-op threads spin after every run by default, waiting for the
next one; on a machine that also trains, tests or serves other models those
spinning threads take cores that do real work elsewhere (measured with
``benchmarks/neighbours.py``). So every ONNX Runtime session and OpenVINO model
fastvit creates (``predict``, ``bench``, export verification, int8 calibration)
defaults to *not* spinning and to unpinned threads. On a dedicated inference host,
where spinning shaves wake-up latency, turn it back on with ``--spin`` (``fastvit
predict`` / ``fastvit bench``) or ``FASTVIT_SPIN=1`` in the environment.

ExecuTorch's XNNPACK pool (pthreadpool) has no spinning switch from Python; its size
is set with ``--threads``. PyTorch's own OpenMP pool is set when ``fastvit`` is imported
(:mod:`fastvit.openmp_wait`: a short spin, then sleep), before torch loads.
"""

from __future__ import annotations

from fastvit.openmp_wait import spin_requested

#: ONNX Runtime session config keys that make idle pool threads spin
ORT_SPIN_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def spin_enabled(spin: bool | None = None) -> bool:
    """``spin`` when given, else ``FASTVIT_SPIN=1`` in the environment, else False."""
    if spin is not None:
        return bool(spin)
    return spin_requested()


def ort_spin_entries(spin: bool | None = None) -> dict[str, str]:
    """The ONNX Runtime session config entries of the policy (``"0"``: no spinning)."""
    value = "1" if spin_enabled(spin) else "0"
    return dict.fromkeys(ORT_SPIN_KEYS, value)


def policy(spin: bool | None = None) -> str:
    """The policy in words, for run headers and reports."""
    if spin_enabled(spin):
        return "spinning thread pools (--spin / FASTVIT_SPIN=1: a dedicated host)"
    return "no spinning, unpinned threads (shared-machine default; --spin to change)"
