"""Scoring a model between training steps without disturbing the run.

Every evaluator (classification and the three dense tasks) does the same three
things around its loop: look through a data-parallel wrapper, switch to eval
mode, and hand the model back in the mode it came in -- even when the loop
raises -- so training continues exactly where it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside (possibly nested) DDP / DataParallel wrappers. Each rank scores
    its own shard, so evaluation runs the bare module: DDP's forward would otherwise
    prepare a gradient reduction that never comes."""
    while isinstance(model, WRAPPERS):
        model = model.module
    return model


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with evaluation_mode(model) as net:`` -- ``net`` is the unwrapped module in eval
    mode; its previous train/eval mode is restored on leaving the block."""
    inner = unwrap_parallel(model)
    was_training = inner.training
    inner.eval()
    try:
        yield inner
    finally:
        inner.train(was_training)
