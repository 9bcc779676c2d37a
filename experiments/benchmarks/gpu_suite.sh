#!/usr/bin/env bash
# Every GPU figure of issue 14 in one command, <= 8 minutes on one H100/H200:
#   - Local Opt.+ReCo vs full: step time and peak memory, preset B, bf16, the paper's shape (17 frames ->
#     5 latent frames; 16x16 and 32x32 tokens per latent frame), eager and compiled (blocks compiled)
#   - expected step time on 1 / 8 / 64 ranks with per-rank vs rank-shared window starts
#   - the SDPA kernel of the Local Opt. window (flash expected: its lower-right causal mask is a CausalBias)
#   - MFU of the baseline (full) and Local Opt. steps at preset B
# and of issue 24 (adds <= 16 minutes):
#   - the sampler: static KV cache, bf16, compiled + CUDA-graph decode step, CFG 2 batched, preset B, against
#     the old concatenating fp32 loop on 16 videos; then 2048 videos x 1280 tokens (5x16x16, 4 batches of 512)
#     and 2048 videos x 5120 tokens (5x32x32, batches of 128: 2 of 16 timed, extrapolated); the 1280 case
#     again with --compile off (graph-captured eager step) to tell whether inductor earns its compile time
# Usage: experiments/benchmarks/gpu_suite.sh [output.txt]   (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${1:-gpu_suite_$(date -u +%Y%m%dT%H%M%SZ).txt}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
{
  echo "# gpu_suite $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  echo "## bench_objectives --device cuda --kernel (preset B, bf16, 5x16x16 and 5x32x32; eager + compiled)"
  timeout 330 "$PY" experiments/benchmarks/bench_objectives.py --device cuda --kernel
  echo "## bench_train --part mfu (preset B, bf16, in-process, full and local)"
  timeout 150 "$PY" experiments/benchmarks/bench_train.py --part mfu --quick
  echo "## bench_sampling --device cuda: 2048 videos x 1280 tokens (preset B, bf16, CFG 2, batches of 512)"
  timeout 300 "$PY" experiments/benchmarks/bench_sampling.py --device cuda --preset B --latent 5x16x16 \
    --videos 2048 --batch 512
  echo "## bench_sampling --device cuda --compile off (CUDA graph of the eager step, no inductor): 2048 x 1280, 2 batches timed"
  timeout 240 "$PY" experiments/benchmarks/bench_sampling.py --device cuda --preset B --latent 5x16x16 \
    --videos 2048 --batch 512 --measure-batches 2 --compile off
  echo "## bench_sampling --device cuda: 2048 videos x 5120 tokens (preset B, bf16, CFG 2, batches of 128, 2 timed)"
  timeout 420 "$PY" experiments/benchmarks/bench_sampling.py --device cuda --preset B --latent 5x32x32 \
    --videos 2048 --batch 128 --measure-batches 2
} 2>&1 | tee "$OUT"
echo "wrote $OUT"
