"""``fastvit bench`` rows of the MobileCLIP towers beside timm's builds of them."""

from __future__ import annotations

import pytest

from fastvit.bench.peers import published_table
from fastvit.bench.report import markdown_table
from fastvit.bench.run import BenchConfig, run_benchmark
from fastvit.bench.runtimes import expand_models
from fastvit.models import list_models

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mobileclip_group_pairs_each_tower_with_its_timm_build(monkeypatch) -> None:
    import fastvit.bench.peers as peers

    towers = list_models("mobileclip")
    monkeypatch.setattr(peers, "timm_available", lambda: True)
    assert expand_models(["mobileclip"]) == [n for t in towers for n in (t, f"timm:{t}")]
    monkeypatch.setattr(peers, "timm_available", lambda: False)
    assert expand_models(["mobileclip"]) == towers
    # no ImageNet top-1 for an embedding tower: the column stays empty
    assert not {*towers, *(f"timm:{t}" for t in towers)} & set(published_table())


def test_a_tower_and_its_timm_twin_come_out_ok(tmp_path) -> None:
    pytest.importorskip("timm")
    config = BenchConfig(models=["fastvit_mci0", "timm:fastvit_mci0"], image_size=64,
                         runs=2, warmup=1, throughput_batch=0, threads=1, out=str(tmp_path))
    rows = run_benchmark(config)["results"]
    assert [r["model"] for r in rows] == ["fastvit_mci0", "timm:fastvit_mci0"]
    for r in rows:
        assert r["status"] == "ok", r
        # the twin runs at our input size (no --peer-image-size), both fused
        assert r["image_size"] == 64 and r["form"] == "fused"
        assert r["published_top1"] is None and r["latency"]["runs"] == 2
    ours, timm = rows
    assert ours["family"] == "fastvit" and timm["family"] == "peer"
    assert ours["params_m"] == pytest.approx(timm["params_m"], abs=0.01)  # 11.36 M fused
    lines = markdown_table(rows).splitlines()[2:]
    assert all(line.split("|")[11].strip() == "-" for line in lines)  # published top-1
