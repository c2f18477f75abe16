"""``fastvit demo`` must stop with one readable line, not a traceback, when a variant's
reparameterized model is not equivalent to its train-time model."""

from __future__ import annotations

import pytest
import torch

from fastvit import demo
from fastvit.cli import main as cli_main


@pytest.mark.usefixtures("one_thread")  # the demo sets the thread count for its timings
def test_demo_reports_a_non_equivalent_variant_in_one_line(tmp_path, monkeypatch, capsys):
    real = demo.reparameterize

    def broken_fusion(model, *args, **kwargs):
        fused = real(model, *args, **kwargs)
        with torch.no_grad():
            fused.head.fc.bias.add_(1.0)  # the fused model no longer computes the same
        return fused

    # monkeypatched: fastvit.demo.reparameterize (the fusion the demo verifies)
    monkeypatch.setattr(demo, "reparameterize", broken_fusion)
    rc = cli_main(["demo", "--skip-training", "--variants", "fastvit_t8", "--runs", "1",
                   "--image-size", "64", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0
    assert "Traceback" not in err
    assert len(lines) == 1 and "fastvit_t8" in lines[0], err
