"""Run logging: tqdm progress, JSON-lines metrics, TensorBoard, PNG curves.

Only rank 0 logs. ``metrics.jsonl`` gets one object per line: ``{"kind":
"train", "step", "epoch", "loss", (other losses), "lr", "img_per_s"}`` every
``log_every`` steps and ``{"kind": "eval", "step", "epoch", ...metrics}`` after
each evaluation. A resumed run appends; readers keep the last record per
``(kind, step)``, which is what :func:`read_metrics` returns.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fastvit.extras import MissingExtraError, require
from fastvit.run.recipes import flatten

_log = logging.getLogger(__name__)
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"


class MetricsLogger:
    """Append-only metrics sink (JSON lines + TensorBoard when installed), and the
    experiment trackers of ``log_to`` (:mod:`fastvit.run.tracking`: MLflow, W&B)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True,
                 tensorboard: bool = True, log_to: Sequence[str] = (),
                 params: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / METRICS_NAME
        self._tb = None
        self.trackers = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if any(name != "tensorboard" for name in log_to):
            from fastvit.run.tracking import Trackers

            self.trackers = Trackers(log_to, out_dir, params)
        if tensorboard:
            try:
                require("tensorboard", "TensorBoard logs")
            except MissingExtraError as err:  # optional: metrics.jsonl and curves.png remain
                _log.info("%s (metrics.jsonl is written anyway)", err)
            else:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
        if self._tb is not None:
            step = record.get("step", 0)
            for key, value in flatten(record, sep="/").items():
                if key not in ("step", "epoch", "kind") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{record.get('kind', 'misc')}/{key}", value, step)
        if self.trackers is not None:
            self.trackers.log(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None

    def finish(self, artifacts: Sequence[Path | None] = (), status: str = "FINISHED") -> None:
        """End the tracker runs with ``artifacts`` (curves PNG, final weights)."""
        self.close()
        if self.trackers is not None:
            self.trackers.finish(artifacts, status)
            self.trackers = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` in step order, the last one winning per (kind, step)."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    path = Path(path)
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            latest[(record.get("kind", ""), int(record.get("step", 0)))] = record
    return [latest[k] for k in sorted(latest, key=lambda k: (k[1], k[0]))]


def progress_bar(iterable: Iterable, *, total: int, desc: str, enabled: bool,
             initial: int = 0) -> Iterator:
    """tqdm bar on rank 0 (stderr); plain iteration elsewhere or when tqdm is missing."""
    if not enabled:
        return iter(iterable)
    try:
        from tqdm import tqdm
    except ImportError:
        return iter(iterable)
    return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True,
                leave=False, file=sys.stderr, mininterval=1.0)


def _lookup(record: dict[str, Any], dotted: str) -> float | None:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None


def plot_curves(metrics_path: str | Path, png_path: str | Path,
                eval_metrics: dict[str, str] | None = None, eval_title: str = "evaluation"
                ) -> Path | None:
    """Losses and learning rate per step, and evaluation metrics, as one PNG.

    ``eval_metrics`` maps a legend label to a dotted key of the eval records
    (classification: ``{"model top-1": "model.top1", "EMA top-1": "ema.top1"}``).
    """
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train" and math.isfinite(r.get("loss", 0))]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastvit.files import atomic_write

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax_loss, ax_lr, ax_eval = axes
    if train:
        steps = [r["step"] for r in train]
        losses = sorted(k for k in train[0] if k == "loss" or k.startswith("loss_"))
        for key in losses:
            ax_loss.plot(steps, [r.get(key, math.nan) for r in train], label=key,
                         lw=1.5 if key == "loss" else 0.8)
        if len(losses) > 1:
            ax_loss.legend(fontsize=7)
        ax_lr.plot(steps, [r["lr"] for r in train], lw=1, color="tab:orange")
    ax_loss.set(title="training loss", xlabel="step")
    ax_lr.set(title="learning rate", xlabel="step")
    for label, key in (eval_metrics or {}).items():
        points = [(r["step"], v) for r in evals if (v := _lookup(r, key)) is not None]
        if points:
            ax_eval.plot(*zip(*points, strict=True), "-o", label=label, ms=3)
    ax_eval.set(title=eval_title, xlabel="step")
    if ax_eval.lines:
        ax_eval.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out
