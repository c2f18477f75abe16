"""Readable errors from DataLoader workers.

A :class:`~fastvit.errors.FastVitError` raised in a worker process comes back in
the main process with the worker's traceback folded into its message; the user
should see the one line the worker raised.
"""

from __future__ import annotations

from fastvit.errors import FastVitError


def clean_worker_error(err: FastVitError) -> FastVitError:
    """The same error type with the worker's one-line original message."""
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return type(err)(last[len(prefix):] if last.startswith(prefix) else last)
