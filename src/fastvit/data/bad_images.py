"""Unreadable images met during a run: one line per file, a count, the full list on disk.

Datasets in ``"skip"`` mode hand unreadable files to the main process inside
each batch (:class:`fastvit.data.datasets.UnreadableImage`). :class:`BadImageLog`
logs each file once, the first time it is met (a validation split is read
every epoch; its bad files are not repeated), and keeps the whole list in a
text file (``OUT/skipped_images.txt``: path, tab, reason), rewritten atomically
whenever a new file appears.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from fastvit.files import atomic_write_text

SKIPPED_IMAGES_NAME = "skipped_images.txt"
log = logging.getLogger(__name__)


class BadImageLog:
    """Each unreadable file logged once; ``path`` (if given) lists them all."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.reasons: dict[str, str] = {}
        self._unwritten = False  # recorded with write=False since the last write

    def __len__(self) -> int:
        return len(self.reasons)

    def add(self, skipped: Iterable[str], *, write: bool = True, quiet: bool = False) -> int:
        """Record ``skipped`` paths; log (unless ``quiet``: another process did) and
        (``write``) list the new ones. Returns how many were new."""
        new = 0
        for item in skipped:
            key = str(item)
            if key in self.reasons:
                continue
            reason = getattr(item, "reason", "") or "unreadable"
            self.reasons[key] = reason
            if not quiet:
                log.warning("skipping unreadable image %s (%s)", key, reason)
            new += 1
        self._unwritten = self._unwritten or bool(new)
        if write and self._unwritten and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, "".join(f"{p}\t{r}\n"
                                                 for p, r in sorted(self.reasons.items())))
            self._unwritten = False
        return new
