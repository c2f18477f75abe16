"""Shared test settings: small, deterministic, CPU-only."""

import os

import pytest
import torch

# Under pytest-xdist every worker gets a share of the cores, so workers side by side
# don't oversubscribe them (a 2-core machine: 2 workers x 1 thread).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 2) // _WORKERS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


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
