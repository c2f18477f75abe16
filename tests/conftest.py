"""Shared test settings: small, deterministic, CPU-only."""

import os

import pytest
import torch

from tests.helpers.signal_stack import disable_signal_stack, unmapped_signal_stack

# Under pytest-xdist every worker gets a share of the cores, so workers side by side
# don't oversubscribe them (a 2-core machine: 2 workers x 1 thread).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 2) // _WORKERS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _signal_stack_stays_mapped():
    """Fails the test that leaves this thread's signal stack unmapped (an OpenVINO Core
    made and dropped out of order, tests/helpers/signal_stack.py) rather than letting a
    later signal kill the worker with SIGSEGV, far from the cause and without a word."""
    yield
    problem = unmapped_signal_stack()
    if problem:
        disable_signal_stack()
        pytest.fail(f"{problem}: an OpenVINO Core made here was dropped before an older "
                    "one; compile with fastvit.deploy.openvino_export.core()")


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread (training loops: deterministic and not
    thrashing next to other processes), restoring the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow cases first (in file order otherwise): under pytest-xdist the long ones start
    while the short ones fill in around them, rather than one starting last while the
    other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
