"""int8 graphs tried for ONNX Runtime that keep GELU in int8 (for ``latency_deploy.py
--investigate``); both lose to ``fastvit.deploy.quantize``'s recipe (GELU float between
a dequantize and a quantize), see docs/benchmarks.md.

* ``lut_gelu``: the exact int8 GELU. Between a dequantize (scale s1, zero point z1) and
  a quantize (s2, z2) GELU maps 256 codes to 256 codes, so ``DQ -> Gelu -> Q`` becomes
  ``Cast(int32) -> Gather(table)`` with ``table[i] = Q(gelu(DQ(i)))``: the same numbers.
* ``sigmoid_gelu``: ``x * sigmoid(1.702 x)`` (the sigmoid GELU approximation) quantized
  as ORT's ``QLinearMul`` / ``QLinearSigmoid`` (a lookup table inside ORT).
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np


def lut_gelu(src: str | Path, dst: str | Path) -> int:
    """Rewrite every ``DequantizeLinear -> Gelu -> QuantizeLinear`` (per-tensor) of a QDQ
    model into a 256-entry table lookup; returns how many were rewritten."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    erf = np.vectorize(math.erf)
    replaced: dict[int, list] = {}
    dropped: set[int] = set()
    for node in graph.node:
        dq = producer.get(node.input[0]) if node.op_type == "Gelu" else None
        after = users[node.output[0]] if dq is not None else []
        if (dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1
                or after[0].op_type != "QuantizeLinear" or len(users[dq.output[0]]) != 1):
            continue
        q = after[0]
        s1, z1, s2, z2 = (values.get(n) for n in (*dq.input[1:3], *q.input[1:3]))
        if any(v is None or v.size != 1 for v in (s1, z1, s2, z2)):
            continue
        x = (np.arange(256) - float(z1)) * float(s1)
        gelu = 0.5 * x * (1 + erf(x / math.sqrt(2)))
        table = np.clip(np.round(gelu / float(s2)) + float(z2), 0, 255).astype(np.uint8)
        graph.initializer.append(numpy_helper.from_array(table, f"{node.name}_lut"))
        replaced[id(dq)] = [
            helper.make_node("Cast", [dq.input[0]], [f"{node.name}_code"], to=TensorProto.INT32),
            helper.make_node("Gather", [f"{node.name}_lut", f"{node.name}_code"], [q.output[0]],
                             axis=0)]
        dropped.update((id(node), id(q)))
    nodes = [new for n in graph.node if id(n) not in dropped
             for new in replaced.get(id(n), [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return len(replaced)


def sigmoid_gelu(src: str | Path, dst: str | Path) -> int:
    """Replace the exported erf GELU by ``x * sigmoid(1.702 x)`` (fp32 graph)."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def erf_gelu(op, x):
        return op.Mul(op.Mul(x, op.Add(op.Erf(op.Div(x, math.sqrt(2))), 1.0)), 0.5)

    def sigmoid_form(op, x):
        alpha = op.Constant(value=ir.tensor(np.array(1.702, dtype=np.float32)))
        return op.Mul(x, op.Sigmoid(op.Mul(x, alpha)))

    model = ir.load(str(src))
    count = pattern.RewriteRuleSet([pattern.RewriteRule(erf_gelu, sigmoid_form)]).apply_to_model(
        model)
    ir.save(model, str(dst))
    return count

