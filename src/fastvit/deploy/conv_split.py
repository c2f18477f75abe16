"""Grouped convolutions with several outputs per group, rewritten as depthwise ones (ONNX).

FastViT's patch embeddings (7x7, stride 2) and its head expansion (3x3) are grouped
convolutions with one input and two outputs per group. ONNX Runtime has no fast int8
kernel for that shape (5x slower than fp32) but a fast one for depthwise convolutions,
so before int8 quantization each is split into ``m`` depthwise convolutions (the
weights of output ``j``, ``j + m``, ...) whose outputs are concatenated and shuffled back
into the original channel order: the same function, exactly (fp32 max |diff| ~1e-9), and
the whole network runs in int8 (measured 0.92x of the int8 latency with those
convolutions left in float, ``benchmarks/latency_deploy.py --investigate``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def split_channel_multiplier_convs(src: str | Path, dst: str | Path) -> int:
    """Rewrite each grouped convolution with one input and ``m > 1`` outputs per group
    (the patch embeddings' 7x7, the head's 3x3) as ``m`` depthwise convolutions whose
    outputs are concatenated and channel-shuffled back into the original order (exact);
    ONNX Runtime has fast int8 kernels for depthwise ones. Returns how many were split."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(src)))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in graph.value_info}
    nodes, count = [], 0
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = inits.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is None or group == 1 or weight.dims[1] != 1 or weight.dims[0] == group:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        b = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else None
        m, name = w.shape[0] // group, node.name or f"conv{count}"
        parts = []
        for j in range(m):
            ins = [node.input[0], f"{name}_w{j}"]
            graph.initializer.append(numpy_helper.from_array(w[j::m].copy(), ins[1]))
            if b is not None:
                ins.append(f"{name}_b{j}")
                graph.initializer.append(numpy_helper.from_array(b[j::m].copy(), ins[2]))
            conv = helper.make_node("Conv", ins, [f"{name}_out{j}"], name=f"{name}_dw{j}")
            conv.attribute.extend(node.attribute)
            nodes.append(conv)
            parts.append(conv.output[0])
        # concat gives channel j*G + g for original channel g*m + j: shuffle back
        height, width = dims[node.output[0]][2:]
        graph.initializer.append(numpy_helper.from_array(
            np.array([0, m, group, height * width], dtype=np.int64), f"{name}_split"))
        graph.initializer.append(numpy_helper.from_array(
            np.array([0, m * group, height, width], dtype=np.int64), f"{name}_shape4"))
        nodes += [helper.make_node("Concat", parts, [f"{name}_cat"], axis=1),
                  helper.make_node("Reshape", [f"{name}_cat", f"{name}_split"],
                                   [f"{name}_4d"]),
                  helper.make_node("Transpose", [f"{name}_4d"], [f"{name}_t"],
                                   perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"{name}_t", f"{name}_shape4"], node.output)]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return count
