"""The downloader against a local HTTP server: fetch, verify, cache, and never keep a
partial or mismatched file."""

import hashlib
import os
import stat

import pytest

from fastvit.weights import download
from fastvit.weights.download import (
    WeightsError,
    WeightsNotCached,
    download_url,
    hash_record,
    recorded_sha256,
)
from tests.helpers.weights import serve_folder, serve_truncated

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    (root / "models").mkdir(parents=True)
    (root / "models" / "w.pth.tar").write_bytes(PAYLOAD)
    return root


def test_fetch_records_hash_then_reads_the_cache_without_the_server(tmp_path, served):
    dest = tmp_path / "c" / "models" / "w.pth.tar"
    with serve_folder(served) as base:
        url = f"{base}/models/w.pth.tar"
        got = download_url(url, dest, progress=False)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert recorded_sha256(dest) == hashlib.sha256(PAYLOAD).hexdigest()
    assert hash_record(dest).read_text().endswith("  w.pth.tar\n")  # sha256sum format
    assert download_url(url, dest) == dest  # the server is gone: the cache answers
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".tmp")]


def test_known_hash_is_checked(tmp_path, served):
    dest = tmp_path / "c" / "w.pth.tar"
    with serve_folder(served) as base:
        with pytest.raises(WeightsError, match="sha256 mismatch") as err:
            download_url(f"{base}/models/w.pth.tar", dest, sha256="0" * 64, progress=False)
        assert "discarded" in str(err.value)
        assert not dest.exists() and not hash_record(dest).exists()
        good = hashlib.sha256(PAYLOAD).hexdigest()
        assert download_url(f"{base}/models/w.pth.tar", dest, sha256=good.upper(),
                            progress=False).read_bytes() == PAYLOAD


def test_truncated_transfer_leaves_no_cache_entry(tmp_path):
    dest = tmp_path / "c" / "w.pth.tar"
    with serve_truncated(PAYLOAD) as base:
        with pytest.raises(WeightsError, match="cut short") as err:
            download_url(f"{base}/w.pth.tar", dest, progress=False)
    assert f"{len(PAYLOAD) // 3} of {len(PAYLOAD)} bytes" in str(err.value)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.pth.tar.lock"]


def test_http_error_and_refused_connection(tmp_path, served):
    with serve_folder(served) as base:
        with pytest.raises(WeightsError, match="HTTP 404"):
            download_url(f"{base}/models/missing.pth.tar", tmp_path / "m", progress=False)
    with pytest.raises(WeightsError, match="cannot download http://127.0.0.1:9/x"):
        download_url("http://127.0.0.1:9/x", tmp_path / "x", progress=False)
    assert not (tmp_path / "m").exists() and not (tmp_path / "x").exists()


def test_offline_reads_only_the_cache(tmp_path, served, monkeypatch):
    dest = tmp_path / "c" / "w.pth.tar"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with serve_folder(served) as base:
        with pytest.raises(WeightsNotCached) as err:
            download_url(f"{base}/models/w.pth.tar", dest)
    assert "HF_HUB_OFFLINE=1" in str(err.value) and str(dest) in str(err.value)
    assert "fastvit weights download" in str(err.value)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"cached")
    assert download_url("http://127.0.0.1:9/never-asked", dest).read_bytes() == b"cached"


def test_downloads_keep_the_umask(tmp_path, served):
    old = os.umask(0o027)
    try:
        with serve_folder(served) as base:
            dest = download_url(f"{base}/models/w.pth.tar", tmp_path / "w", progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640


def test_cache_locations_follow_the_ecosystem(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTVIT_CACHE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hh"))
    assert download.url_cache_dir() == tmp_path / "th" / "hub" / "checkpoints" / "fastvit"
    assert download.hub_cache_dir() == tmp_path / "hh" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hc"))
    assert download.hub_cache_dir() == tmp_path / "hc"
    monkeypatch.setenv("FASTVIT_CACHE", str(tmp_path / "one"))  # one folder for both
    assert download.url_cache_dir() == tmp_path / "one" / "official"
    assert download.hub_cache_dir() == tmp_path / "one" / "hub"
    assert download.url_cache_dir(tmp_path / "arg") == tmp_path / "arg" / "official"
