"""The paper's Figure 1 on this machine: all seven FastViT variants (fused, 256x256) and
the peers (random weights, their published eval size: 224, timm FastViT 256), batch 1,
latency against published ImageNet top-1, in PyTorch eager and ONNX Runtime.

    python benchmarks/pareto.py                       # writes outputs/pareto/
    python benchmarks/pareto.py --runtimes eager onnx onnx-int8 --threads 4

Extra options are passed to ``fastvit bench`` and override the defaults below.
"""

from __future__ import annotations

import sys

from fastvit.cli import main

# 3 passes of 20 timed runs: a burst of load on a shared machine spoils one pass, not a row.
DEFAULTS = ["--runtimes", "eager", "onnx", "--runs", "20", "--repeats", "3", "--warmup", "5",
            "--throughput-batch", "16", "--out", "outputs/pareto"]

if __name__ == "__main__":
    raise SystemExit(main(["bench", "all", *DEFAULTS, *sys.argv[1:]]))
