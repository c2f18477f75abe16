"""Every weights test runs in its own caches, online by default, with the Hub
endpoint pointed at a closed local port: nothing can reach the network."""

import pytest

try:  # imported now, so its import-time settings never come from a test's environment
    from huggingface_hub import constants as hub_constants
except ImportError:  # pragma: no cover - the hub extra is not installed
    hub_constants = None


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTVIT_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    if hub_constants is not None:  # our code reads HF_HUB_OFFLINE per call, not at import
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE",
                 "FASTVIT_WEIGHTS_URL"):
        monkeypatch.delenv(name, raising=False)
    return cache


@pytest.fixture
def no_connections(monkeypatch):
    """Record (and refuse) every outgoing connection: offline must mean no network at all."""
    import socket

    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise ConnectionRefusedError(f"test forbids connecting to {address}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts
