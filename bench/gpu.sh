#!/usr/bin/env bash
# Every GPU check in at most 6 minutes, for a borrowed GPU machine: the `gpu` tests (bf16, flash attention,
# FSDP2 over NCCL), then bench/gpu.py (ViT-L/16, 16 x 224, bf16, FSDP2 on all visible GPUs, the largest batch
# that fits, activation checkpointing off and on, SDPA and flash-attn). Results go to $OUT (default bench/out):
# gpu_tests.txt, gpu.jsonl, env.txt.   Usage: bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -c \
  "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"; \
  python -c "import flash_attn; print('flash_attn', flash_attn.__version__)" 2>&1 | tail -1; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout 100 python -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
GPUS=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
timeout 250 torchrun --standalone --nproc-per-node="$GPUS" bench/gpu.py --time-budget 200 "$@" | tee "$OUT/gpu.jsonl"
