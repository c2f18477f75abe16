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
    from fastvit.deploy.predict import find_images

    if not inputs:
        raise ConfigError("give image files, folders or glob patterns to predict on")
    return find_images(inputs)[0]


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
