"""Small models of every kind ``fastvit app`` serves, and the app launched on them.

FastViT-T8 is cut to one block per stage for the module that uses it (the variant table
patched, so checkpoints of it load by name); images are 64 px. Each app is launched on
127.0.0.1 at a free port, without blocking, and closed when its module ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fastvit.models import VARIANTS, randomize_model_stats
from tests.helpers.shallow import one_block_per_stage, one_block_per_stage_spec

#: the modules that launch the app; checked without importing gradio (seconds) at collection
needs_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None or importlib.util.find_spec("gradio_client")
    is None, reason="gradio is not installed: pip install 'fastvit[app]'")

SIZE = 64
CLASSES = ["cat", "dog", "car"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def shallow_t8() -> Iterator[None]:
    """``fastvit_t8`` is one block per stage while the module runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(VARIANTS, "fastvit_t8", one_block_per_stage_spec("fastvit_t8"))
        yield


def classifier_file(path: Path) -> Path:
    """A 3-class T8 (one block per stage) recorded as taking 64 px images."""
    from fastvit.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = one_block_per_stage("fastvit_t8")
    model.reset_classifier(len(CLASSES))
    randomize_model_stats(model, seed=0)
    return save_checkpoint(model, path, class_names=CLASSES,
                           metadata={"pretrained_cfg": {"input_size": [3, SIZE, SIZE]}})


@contextlib.contextmanager
def launched(app, **options) -> Iterator[tuple[object, object]]:
    """``(blocks, client)`` of ``app`` served on 127.0.0.1 at a free port; closed after."""
    from gradio_client import Client

    from fastvit.app import serve

    blocks = serve(app, host="127.0.0.1", port=free_port(), block=False, repeats=2,
                   **options)
    try:
        yield blocks, Client(blocks.local_url, verbose=False)
    finally:
        blocks.close()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny forwards on one intra-op thread (no OpenMP thrashing next to other work)."""
