"""Every weights test runs in its own caches, online by default, with the Hub
endpoint pointed at a closed local port: nothing can reach the network."""

import pytest


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTVIT_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE",
                 "FASTVIT_WEIGHTS_URL"):
        monkeypatch.delenv(name, raising=False)
    return cache
