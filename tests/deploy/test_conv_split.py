"""Channel-multiplier convolutions split into depthwise ones: exact in fp32, and with them
every convolution of the int8 file is quantized."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fastvit.deploy.conv_split import split_channel_multiplier_convs
from fastvit.deploy.onnx_export import export_onnx
from fastvit.deploy.onnx_runtime import ort_session
from fastvit.deploy.quantize import TensorCalibration, quantize_onnx
from tests.deploy.test_export import fused_randomized


def grouped_multiplier_convs(graph) -> list[str]:
    weights = {i.name: i.dims for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "Conv"
            and next((a.i for a in n.attribute if a.name == "group"), 1) > 1
            and n.input[1] in weights
            and weights[n.input[1]][0] != next(a.i for a in n.attribute if a.name == "group")]


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_split_is_exact_and_leaves_only_depthwise_convs(tmp_path, name: str) -> None:
    src, dst = tmp_path / "m.onnx", tmp_path / "split.onnx"
    export_onnx(fused_randomized(name, seed=4), src, image_size=64, dynamic_batch=True)
    assert len(grouped_multiplier_convs(onnx.load(str(src)).graph)) == 4  # 3 embeddings + head
    assert split_channel_multiplier_convs(src, dst) == 4
    assert grouped_multiplier_convs(onnx.load(str(dst)).graph) == []
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    before = ort_session(src).run(None, {"input": x})[0]
    after = ort_session(dst).run(None, {"input": x})[0]
    assert np.abs(before - after).max() <= 1e-5 * max(1.0, np.abs(before).max())


@pytest.mark.slow
def test_every_int8_convolution_reads_quantized_weights(tmp_path) -> None:
    src = tmp_path / "t8.onnx"
    export_onnx(fused_randomized("fastvit_t8"), src, image_size=64)
    g = torch.Generator().manual_seed(0)
    samples = [torch.randn(3, 64, 64, generator=g) for _ in range(4)]
    out = quantize_onnx(src, tmp_path / "t8.int8.onnx",
                        TensorCalibration(samples, "input", progress=False))
    graph = onnx.load(str(out)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) >= 50
    assert all(producers.get(n.input[1]) == "DequantizeLinear" for n in convs)
