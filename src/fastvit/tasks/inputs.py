"""The images a task's ``predict`` runs on, and one distinct output name per image.

Inputs are spelled as for ``fastvit predict``: files, folders (searched
recursively) and glob patterns, expanded by the one function that does it,
:func:`fastvit.deploy.predict.find_images`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fastvit.errors import ConfigError


def input_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files of ``inputs``, in order. :class:`~fastvit.errors.DataError` names a
    missing file, or a folder / pattern without images; no inputs is a ConfigError."""
    return found_images(inputs)[0]


def found_images(inputs: Sequence[str | os.PathLike], what: str = "predict on"
                 ) -> tuple[list[Path], frozenset[Path]]:
    """:func:`input_images` and, apart, those found by searching a folder or a pattern
    (an unreadable one of those may be skipped; a file named outright may not)."""
    from fastvit.deploy.predict import find_images

    if not inputs:
        raise ConfigError(f"give image files, folders or glob patterns to {what}")
    return find_images(inputs)


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A file-name stem per image that no other image of ``paths`` shares: the image's own
    stem, or -- when a folder search found ``a/x.jpg`` and ``b/x.jpg`` -- its path from
    the folder the clashing images share, joined by ``__`` (``a__x``)."""
    stems = [p.stem for p in paths]
    clashing = {s for s in stems if stems.count(s) > 1}
    if not clashing:
        return stems
    shared = Path(os.path.commonpath([p.resolve().parent for p in paths
                                      if p.stem in clashing]))
    return ["__".join(p.resolve().relative_to(shared).with_suffix("").parts)
            if p.stem in clashing else p.stem for p in paths]
