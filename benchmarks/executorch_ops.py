"""Why ExecuTorch int8 (XNNPACK) is no faster than fp32 on an x86 CPU: FastViT's operations
one by one, each lowered alone to an fp32 and a PT2E-int8 ``.pte`` and timed interleaved.

    python benchmarks/executorch_ops.py [--threads 2] [--runs 100]

Shapes are fastvit_t8's first stage at 256x256 input (48 channels at 64x64, ConvFFN
expansion 3x): a pointwise convolution (ConvFFN's fc1), the 7x7 depthwise convolution
(ConvFFN), the 3x3 depthwise convolution (RepMixer), GELU and the residual addition.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from fastvit.bench.run import cpu_name, time_interleaved
from fastvit.deploy.executorch_export import (
    lower_to_pte,
    no_host_conv_heuristics,
    pte_runner,
    set_threads,
)


class Add(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * 0.5


OPS = {  # name -> (module, input channels)
    "pointwise conv 48->144": (nn.Conv2d(48, 144, 1), 48),
    "depthwise conv 7x7, 48 ch": (nn.Conv2d(48, 48, 7, padding=3, groups=48), 48),
    "depthwise conv 3x3, 48 ch": (nn.Conv2d(48, 48, 3, padding=1, groups=48), 48),
    "GELU, 144 ch": (nn.GELU(), 144),
    "add, 48 ch": (Add(), 48),
}


@torch.inference_mode()
def eager(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def int8_program(module: nn.Module, example: torch.Tensor):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=True))
    with no_host_conv_heuristics():
        prepared = prepare_pt2e(torch.export.export(module, (example,)).module(), quantizer)
    for _ in range(4):
        prepared(torch.randn_like(example))
    with no_host_conv_heuristics():
        return torch.export.export(convert_pt2e(prepared), (example,))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="feature map side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_threads(args.threads)  # before any program is loaded
    calls = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (module, channels) in OPS.items():
            module = module.eval()
            x = torch.randn(1, channels, args.size, args.size)
            with no_host_conv_heuristics():
                fp32 = torch.export.export(module, (x,))
            for kind, program in (("fp32", fp32), ("int8", int8_program(module, x))):
                path = Path(scratch) / f"{len(calls)}.pte"
                path.write_bytes(lower_to_pte(program))
                run = pte_runner(path)
                calls[(name, kind)] = (lambda run=run, x=x: run(x))
            calls[(name, "eager")] = (lambda module=module, x=x: eager(module, x))
        timings = time_interleaved(calls, runs=args.runs, warmup=10, block=5)
    print(f"{cpu_name()} ({os.cpu_count()} CPUs), {args.threads} threads, ExecuTorch XNNPACK, "
          f"batch 1, {args.size}x{args.size} feature maps, median of {args.runs} interleaved "
          f"calls\n")
    print("| operation | PyTorch eager fp32 ms | ExecuTorch fp32 ms | ExecuTorch int8 ms | "
          "int8 / fp32 |\n|---|---|---|---|---|")
    for name in OPS:
        f, i = timings[(name, "fp32")].median_ms, timings[(name, "int8")].median_ms
        print(f"| {name} | {timings[(name, 'eager')].median_ms:.3f} | {f:.3f} | {i:.3f} "
              f"| {i / f:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
