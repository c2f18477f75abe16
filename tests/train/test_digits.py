"""The bundled digits data really trains fastvit_t8 (``fastvit train --data digits``)."""

from __future__ import annotations

import pytest

from fastvit.train.config import build_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_digits_short_run_learns(tmp_path):
    """Two epochs (44 steps): far above the 10% of chance."""
    from fastvit.train.trainer import fit

    cfg = build_config(values={"data.path": "digits", "run.out_dir": str(tmp_path / "run"),
                               "run.progress": False, "schedule.epochs": 2},
                       overrides=["schedule.warmup_epochs=0.5"])
    summary = fit(cfg, log=lambda _: None)
    top1 = summary["last_eval"]["model"]["top1"]
    assert summary["last_eval"]["model"]["count"] == 359
    assert top1 > 60.0, summary["history"]


@pytest.mark.slow
def test_digits_demo_reaches_93_percent_and_survives_reparameterization(tmp_path):
    from fastvit.train.demo_digits import run

    result = run(tmp_path, log=lambda _: None)
    assert result["top1"] >= 93.0, result
    assert result["top1_fused"] == result["top1"] and result["fused"]
    assert result["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / "digits_metrics.json").is_file()
