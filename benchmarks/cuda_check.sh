#!/usr/bin/env bash
# The CUDA checks CI cannot run (it has no GPU), as one short script for a one-GPU machine:
#   bash benchmarks/cuda_check.sh OUT_DIR
# runs from a checkout without installing (PYTHONPATH=src), with whatever torch the machine
# has, and writes everything under OUT_DIR: log.txt, the fp16 benchmark of every variant and
# peer (bench.json/.md, pareto.png) and compiled-training throughput (train_cuda.json).
# Each step has its own time limit so one slow step cannot hide the others.
set -u
OUT=${1:?usage: cuda_check.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
exec > >(tee -a "$OUT/log.txt") 2>&1

step() {  # step NAME SECONDS CMD...
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
$PY -c "import torch, torchvision, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

# 1. The trainer tests on CUDA, including fp16 + GradScaler (skipped on CPU).
FASTVIT_TRAIN_TEST_DEVICE=cuda step pytest-cuda 240 \
    $PY -m pytest -q -p no:cacheprovider tests/train/test_loop.py
# 2. The CLI on CUDA: fp16 + compile for one epoch, then torchrun (NCCL) with bf16.
step train-fp16-compile 120 $PY -m fastvit train --data digits --model fastvit_t8 --epochs 1 \
    --device cuda --amp fp16 --compile --no-progress --out /tmp/cuda_fp16
step torchrun-nccl-bf16 90 $PY -m torch.distributed.run --standalone --nproc-per-node 1 \
    -m fastvit train --data digits --model fastvit_t8 --epochs 1 --device cuda --amp bf16 \
    --no-progress --out /tmp/cuda_ddp
# 3. Latency/throughput, fp16, batch 8, median of 100 runs (the paper's desktop-GPU protocol).
step bench-fp16 150 $PY -m fastvit bench fastvit peers --device cuda --half \
    --runtimes eager channels_last --batch-size 8 --runs 100 --out "$OUT/bench_fp16"
# 4. Compiled training step vs timm's eager one, bf16 autocast.
step train-throughput 120 $PY benchmarks/train_throughput.py --device cuda --amp bf16 --compile \
    --batch 64 --size 256 --no-memory --json "$OUT/train_cuda.json"
