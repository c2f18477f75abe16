"""The recipe of a dense-task run: packaged default, ``--config``, flags, ``--set``.

The run itself is the one every trainer shares, :func:`fastvit.run.training.train_task`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_task_recipe(cls: type, default: str, config: str | Path | None = None,
                     values: dict[str, Any] | None = None,
                     overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The packaged ``default`` recipe (or ``config``: a packaged name or a YAML path),
    then ``values`` set by plain flags (None: not given), then ``--set`` overrides."""
    from fastvit.run.recipes import apply_overrides, load_recipe

    given = {k: v for k, v in (values or {}).items() if v is not None}
    recipe = load_recipe(cls, config or default, "tasks", given)
    return apply_overrides(recipe, overrides)
