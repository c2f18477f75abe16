"""PyTorch's OpenMP wait policy: set by ``import fastvit``, and read by torch's libgomp."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from fastvit.openmp_wait import OPENMP_WAIT, describe


def test_import_sets_a_short_spin_unless_told_otherwise(monkeypatch) -> None:
    """Set when fastvit is imported (before torch loads OpenMP, as the ``fastvit``
    command does); FASTVIT_SPIN=1 and a user's own setting of either variable win."""
    import fastvit

    def after_import(**env: str) -> dict[str, str]:
        for name in (*OPENMP_WAIT, "FASTVIT_SPIN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        importlib.reload(fastvit)
        return {name: os.environ[name] for name in OPENMP_WAIT if name in os.environ}

    assert after_import() == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
    assert after_import(FASTVIT_SPIN="1") == {}
    assert after_import(OMP_WAIT_POLICY="ACTIVE") == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert after_import(GOMP_SPINCOUNT="50") == {"GOMP_SPINCOUNT": "50"}
    assert describe() == "OpenMP wait GOMP_SPINCOUNT=50"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libgomp: Linux wheels")
@pytest.mark.parametrize(("extra", "spincount"), [({}, "1000"), ({"FASTVIT_SPIN": "1"}, "300000")])
def test_torchs_openmp_runtime_reads_the_policy(extra: dict[str, str], spincount: str) -> None:
    """libgomp prints what it uses (OMP_DISPLAY_ENV) when torch starts its pool: the
    spin count is ours, or libgomp's own default (300000, ~3 ms) on a dedicated host."""
    env = {k: v for k, v in os.environ.items()
           if k not in (*OPENMP_WAIT, "FASTVIT_SPIN", "OMP_NUM_THREADS")}
    env.update(extra, OMP_DISPLAY_ENV="VERBOSE")
    done = subprocess.run([sys.executable, "-c", "import fastvit, torch; torch.ones(8).sum()"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    assert f"GOMP_SPINCOUNT = '{spincount}'" in done.stderr, done.stderr[-2000:]
