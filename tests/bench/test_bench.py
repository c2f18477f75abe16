"""``fastvit bench``: every runtime builder on a tiny configuration (one block per stage), valid
JSON / markdown / PNG, peers and skips, the published-accuracy table, and the reproducing
command."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from PIL import Image

from fastvit.bench.peers import TORCHVISION_OPTIONAL, TORCHVISION_PEERS, published_table
from fastvit.bench.run import BenchConfig, reproduce_command, run_benchmark, time_interleaved
from fastvit.bench.runtimes import RUNTIMES, expand_models
from fastvit.cli import build_parser
from fastvit.cli import main as cli
from fastvit.cli.bench import config_from_args
from fastvit.errors import ConfigError
from fastvit.models import VARIANTS, list_models
from tests.helpers.shallow import one_block_per_stage_spec

TINY = ["--image-size", "64", "--peer-image-size", "64", "--runs", "3", "--warmup", "1",
        "--throughput-batch", "2", "--threads", "1"]
SMALL = dict(image_size=64, peer_image_size=64, runs=3, warmup=1, throughput_batch=0,
             threads=2)


#: every runtime builder and each of its options: the ONNX and OpenVINO int8 rows export and
#: verify the fp32 file first (the plain rows are those steps alone); ExecuTorch's int8 row
#: adds PT2E quantization and a second lowering, which the int8 export tests run on a
#: trained model (tests/deploy/test_executorch.py)
EVERY_BUILDER = ("eager", "channels_last", "compile", "onnx-int8", "executorch",
                 "openvino-bf16", "openvino-int8")


def test_the_tiny_run_takes_every_runtime_builder() -> None:
    def builder(name: str) -> str:
        return name.removesuffix("-int8").removesuffix("-bf16")
    assert {builder(n) for n in RUNTIMES} == {builder(n) for n in EVERY_BUILDER}
    assert set(EVERY_BUILDER) <= set(RUNTIMES)


@pytest.mark.slow
def test_every_runtime_builder_on_a_tiny_configuration(tmp_path, capsys, monkeypatch) -> None:
    # fastvit_t8 at one block per stage: the harness, not the exporters (tested on their
    # own), is what runs here; each runtime still exports, verifies, loads and times it
    monkeypatch.setitem(VARIANTS, "fastvit_t8", one_block_per_stage_spec("fastvit_t8"))
    # the compile row through AOTAutograd without Inductor's code generation, which
    # tests/models/test_reparam.py runs on the fused model
    compile_, compiled = torch.compile, []

    def aot_eager(model, **kwargs):
        compiled.append(model)
        return compile_(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", aot_eager)
    out = tmp_path / "bench"
    code = cli(["bench", "fastvit_t8", "--runtimes", *EVERY_BUILDER, *TINY, "--out", str(out)])
    assert code == 0 and len(compiled) == 1
    report = json.loads((out / "bench.json").read_text())
    rows = report["results"]
    assert [r["runtime"] for r in rows] == list(EVERY_BUILDER)
    for r in rows:
        assert r["status"] == "ok", r
        assert r["form"] == "fused" and r["image_size"] == 64 and r["batch"] == 1
        assert 0 < r["latency"]["median_ms"] <= r["latency"]["p90_ms"]
        assert r["latency"]["runs"] == 3
        assert r["throughput"]["batch"] == 2 and r["throughput"]["images_per_s"] > 0
        assert r["published_top1"] == 76.2
    assert report["command"].startswith("fastvit bench fastvit_t8 --runtimes eager")
    markdown = (out / "bench.md").read_text()
    assert report["command"] in markdown
    assert sum(line.startswith("| fastvit_t8 |") for line in markdown.splitlines()) == len(
        EVERY_BUILDER)
    with Image.open(out / "pareto.png") as png:
        assert png.format == "PNG" and png.size[0] > 600
    printed = capsys.readouterr().out
    assert "reproduce: fastvit bench" in printed and "pareto.png" in printed


def test_peers_unfused_features_only_and_skips(tmp_path, monkeypatch) -> None:
    import fastvit.bench.peers as peers

    monkeypatch.setattr(peers, "timm_available", lambda: False)
    config = BenchConfig(models=["fastvit_t8", "mobilenet_v3_large", "timm:mobileone_s0"],
                         unfused=True, out=str(tmp_path), **SMALL)
    rows = {r["model"]: r for r in run_benchmark(config)["results"]}
    assert rows["fastvit_t8"]["status"] == "ok" and rows["fastvit_t8"]["form"] == "train-time"
    assert rows["fastvit_t8"]["throughput"] is None
    assert rows["mobilenet_v3_large"]["status"] == "ok"
    assert rows["mobilenet_v3_large"]["published_top1"] == pytest.approx(74.042)
    assert rows["timm:mobileone_s0"]["status"] == "skipped"
    assert "needs timm" in rows["timm:mobileone_s0"]["note"]
    # the detection / segmentation backbone line: features-only at batch 2
    config = BenchConfig(models=["fastvit_t8"], features_only=True, batch_size=2, repeats=2,
                         **{**SMALL, "peer_image_size": None})
    (row,) = run_benchmark(config)["results"]
    assert row["status"] == "ok" and row["batch"] == 2
    assert len(row["latency"]["pass_medians_ms"]) == 2 and row["latency"]["runs"] == 6


def test_timm_peer_is_fused_when_timm_is_installed(tmp_path) -> None:
    pytest.importorskip("timm")
    (row,) = run_benchmark(BenchConfig(models=["timm:fastvit_t8"], **SMALL))["results"]
    assert row["status"] == "ok" and row["form"] == "fused" and row["image_size"] == 64


def test_published_table_matches_torchvision_metadata() -> None:
    from torchvision.models import get_model_weights

    table = published_table()
    for name in TORCHVISION_PEERS + TORCHVISION_OPTIONAL:
        entry = table[name]
        weights = get_model_weights(name).IMAGENET1K_V1
        assert entry.source.endswith(f"{type(weights).__name__}.IMAGENET1K_V1")
        assert entry.top1 == pytest.approx(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])
        assert entry.eval_size == 224
    assert table["fastvit_t8"].top1 == 76.2 and table["fastvit_ma36"].top1 == 83.9
    assert table["timm:mobileone_s1"].top1 == 75.9
    assert all(table[f"timm:{n}"].top1 == table[n].top1 for n in list_models())


def test_model_groups_and_unknown_names() -> None:
    assert expand_models(["fastvit"]) == list_models()
    assert expand_models(["fastvit_t8", "fastvit", "resnet50"])[:2] == [
        "fastvit_t8", "fastvit_t12"]
    with pytest.raises(ConfigError, match="unknown model 'resnet5'"):
        expand_models(["resnet5"])


def test_reproduce_command_parses_back_to_the_same_options() -> None:
    parser, _ = build_parser("bench")

    def parse(argv: list[str]) -> BenchConfig:
        return config_from_args(parser.parse_args(argv))

    config = parse(["fastvit_t8", "efficientnet_b0", "--runtimes", "eager", "onnx",
                    "--unfused", "--peer-image-size", "192", "--threads", "3"])
    command = reproduce_command(config)
    assert parse(shlex.split(command)[2:]) == config


def test_bad_options_are_clear_errors(capsys) -> None:
    assert cli(["bench", "fastvit_t8", "--runs", "0"]) == 2
    assert "--runs must be >= 1" in capsys.readouterr().err
    assert cli(["bench", "fastvit_t8", "--half"]) == 2
    assert "--half needs a CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["bench", "fastvit_t8", "--runtimes", "tensorrt"])


def test_interleaved_timing_reports_every_candidate() -> None:
    calls = {"a": lambda: sum(range(100)), "b": lambda: sum(range(1000))}
    timings = time_interleaved(calls, runs=5, warmup=1, block=2)
    assert set(timings) == {"a", "b"}
    assert all(t.runs == 5 and 0 < t.median_ms <= t.p90_ms for t in timings.values())
