"""The bundled digits data really trains fastvit_t8 (``fastvit train --data digits``)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_digits_demo_reaches_93_percent_and_survives_reparameterization(tmp_path):
    from fastvit.train.demo_digits import run

    result = run(tmp_path, log=lambda _: None)
    assert result["val_images"] == 359  # the held-out 20% of the 1797 digits
    assert result["top1"] >= 93.0, result
    assert result["top1_fused"] == result["top1"] and result["fused"]
    assert result["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / "digits_metrics.json").is_file()
