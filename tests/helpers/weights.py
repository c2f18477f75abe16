"""Local stand-ins for the places weights come from: an HTTP server with the official
release's folder layout, one that cuts transfers short, and a Hugging Face cache
folder laid out as huggingface_hub writes it. Nothing here touches the network."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

import fastvit
from tests.helpers.checkpoints import official_layout_fixture

GOLDFISH = 1  # ImageNet class index whose logit the served weights make the largest


def weights_model(variant: str = "fastvit_t8", seed: int = 0, *,
                  top_class: int | None = GOLDFISH) -> fastvit.FastVit:
    """A train-time model with random statistics (eval mode) whose classifier bias
    makes ``top_class`` the top-1 for any input."""
    torch.manual_seed(seed)
    model = fastvit.randomize_model_stats(fastvit.create_model(variant), seed).eval()
    if top_class is not None:
        with torch.no_grad():
            model.head.fc.bias[top_class] = 1e3
    return model


def write_official(root: Path, model: fastvit.FastVit, relative: str) -> Path:
    """``model`` as the official release stores it (``{"state_dict": ...}``, its key
    names) at ``root/relative``."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": official_layout_fixture(model.state_dict())}, path)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Announces the whole file, sends a third of it, closes the connection."""

    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[: len(self.payload) // 3])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _running(handler) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def serve_folder(root: Path) -> contextlib.AbstractContextManager[str]:
    """Serve ``root`` on 127.0.0.1 (a free port); yields the base URL."""
    return _running(functools.partial(_QuietHandler, directory=str(root)))


def serve_truncated(payload: bytes) -> contextlib.AbstractContextManager[str]:
    handler = type("Truncating", (_TruncatingHandler,), {"payload": payload})
    return _running(handler)


def populate_hf_cache(cache: Path, repo_id: str, files: dict[str, Path | bytes],
                      commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Lay ``files`` out as huggingface_hub's cache does: content-addressed blobs,
    ``snapshots/<commit>/<name>`` links to them, ``refs/main`` naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
