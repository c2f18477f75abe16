"""Runs on record in MLflow and Weights & Biases (``--log-to tensorboard,mlflow,wandb``).

Teams compare runs in an experiment tracker rather than in each run's
``metrics.jsonl``. A tracker gets, from rank 0 only: the effective recipe as
params (flattened, ``data.batch_size``...), every record of
:class:`~fastvit.run.metrics_log.MetricsLogger` as metrics at its step
(``train/loss``, ``eval/model/top1``...), and at the end the curves PNG and the
final weights as artifacts. A resumed run continues the same tracker run (its id
is kept in ``OUT/tracking.json``).

* MLflow (``fastvit[mlflow]``, the small ``mlflow-skinny`` client): to
  ``MLFLOW_TRACKING_URI`` when set, else to a local file store ``./mlruns``
  (MLflow's own default place; the file store is opted into for that default).
* W&B (``fastvit[wandb]``): project ``WANDB_PROJECT`` (default ``fastvit``);
  ``WANDB_MODE=offline`` writes the run under ``OUT/wandb/`` for a later ``wandb sync``.

A tracker that fails while logging is reported once and dropped: it never ends a run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fastvit.errors import ConfigError
from fastvit.extras import require
from fastvit.run.recipes import flatten

LOG_TARGETS = ("tensorboard", "mlflow", "wandb")
TRACKING_NAME = "tracking.json"
DEFAULT_MLRUNS = "mlruns"
_log = logging.getLogger(__name__)


def parse_log_to(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` -> ``("tensorboard", "mlflow")``; unknown names: ConfigError."""
    if text is None:
        return ("tensorboard",)
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n and n != "none"]
    unknown = sorted(set(names) - set(LOG_TARGETS))
    if unknown:
        raise ConfigError(f"--log-to: unknown {', '.join(unknown)}; choose from "
                          f"{', '.join(LOG_TARGETS)} (comma-separated) or none")
    return tuple(dict.fromkeys(names))


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """A nested recipe as ``{"data.batch_size": "128", ...}`` (lists as JSON)."""
    return {key: json.dumps(value) if isinstance(value, list | tuple) else str(value)
            for key, value in flatten(config).items()}


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A metrics record as ``{"train/loss": ..., "eval/model/top1": ...}`` (numbers only)."""
    kind = record.get("kind", "misc")

    def walk(value: Any, prefix: str) -> Iterable[tuple[str, float]]:
        if isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{prefix}/{k}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield prefix, float(value)

    return {k: v for key, value in record.items() if key not in ("kind", "step", "epoch")
            for k, v in walk(value, f"{kind}/{key}")}


class Tracker:
    """One tracker run: ``log`` records, ``finish`` with artifacts."""

    name = "tracker"

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, artifacts: Sequence[Path], status: str) -> None:
        raise NotImplementedError


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, out_dir: Path, params: dict[str, str], run_id: str | None) -> None:
        require("mlflow", "--log-to mlflow")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow's own default place, as a file store (opted into explicitly)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path(DEFAULT_MLRUNS).resolve().as_uri()
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fastvit")
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment)
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id,
                                                 run_name=out_dir.name).info.run_id
            from mlflow.entities import Param

            items = [Param(k, v[:6000]) for k, v in params.items()]
            for start in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 500])

    def finish(self, artifacts: Sequence[Path], status: str) -> None:
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, out_dir: Path, params: dict[str, Any], run_id: str | None) -> None:
        wandb = require("wandb", "--log-to wandb")
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fastvit"),
                              name=out_dir.name, config=params, dir=str(out_dir),
                              id=run_id, resume="allow" if run_id else None)
        self.run_id = self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, artifacts: Sequence[Path], status: str) -> None:
        for path in artifacts:
            if path.suffix == ".png":
                self.run.log({"curves": self.wandb.Image(str(path))})
            else:
                artifact = self.wandb.Artifact(f"{self.run.id}-{path.stem}", type="model")
                artifact.add_file(str(path))
                self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


TRACKERS = {"mlflow": MlflowTracker, "wandb": WandbTracker}


class Trackers:
    """The trackers of one run (rank 0): started at once, so a missing package or an
    unreachable server is one line before training starts."""

    def __init__(self, names: Sequence[str], out_dir: str | Path,
                 config: dict[str, Any] | None) -> None:
        self.out_dir = Path(out_dir)
        self.active: list[Tracker] = []
        ids = self._read_ids()
        params = flat_params(config or {})
        for name in names:
            if name in TRACKERS:
                self.active.append(TRACKERS[name](self.out_dir, params, ids.get(name)))
        if self.active:
            from fastvit.files import write_json

            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / TRACKING_NAME,
                       {**ids, **{t.name: t.run_id for t in self.active}})

    def _read_ids(self) -> dict[str, str]:
        path = self.out_dir / TRACKING_NAME
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            return {}

    def log(self, record: dict[str, Any]) -> None:
        metrics = flat_metrics(record)
        if metrics:
            self._each(lambda t: t.log(metrics, int(record.get("step", 0))))

    def finish(self, artifacts: Sequence[Path | None] = (), status: str = "FINISHED") -> None:
        paths = [Path(p) for p in artifacts if p is not None and Path(p).is_file()]
        self._each(lambda t: t.finish(paths, status))
        self.active = []

    def _each(self, call: Any) -> None:
        for tracker in list(self.active):
            try:
                call(tracker)
            except Exception as err:  # noqa: BLE001 -- a tracker never ends a run
                _log.warning("warning: %s logging failed (%s: %s); it is off for the rest "
                             "of the run", tracker.name, type(err).__name__, err)
                self.active.remove(tracker)
