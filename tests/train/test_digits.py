"""The bundled digits data really trains fastvit_t8 (``fastvit train --data digits``)."""

from __future__ import annotations

import pytest

from fastvit.train.cli import config_from_args

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits_config(tmp_path, *extra: str):
    import argparse

    from fastvit.train import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return config_from_args(parser.parse_args(
        ["--data", "digits", "--out", str(tmp_path / "run"), "--no-progress", *extra]))


def test_digits_short_run_learns(tmp_path):
    """Two epochs (44 steps): far above the 10% of chance."""
    from fastvit.train.trainer import fit

    cfg = _digits_config(tmp_path, "--epochs", "2", "--set", "schedule.warmup_epochs=0.5")
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
