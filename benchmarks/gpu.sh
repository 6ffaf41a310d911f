#!/usr/bin/env bash
# Issue 24's GPU rows in one command, within about 8 minutes on one GPU: inference of S60 at 224 (batch 32, latency
# at batch 1) eager and at precision='auto' (bf16 from Ampere on, weights cast once), both under torch.compile; a
# training step of S60 /4 at 32 (batch 64, LAMB) under bf16 autocast and torch.compile; then a real digits run of
# patchconvnet-train with --mixed-precision auto --compile, which prints the precision Accelerate got.
#     bash benchmarks/gpu.sh [OUT_DIR]      # default OUT_DIR: gpu-results; each part is cut off at its budget
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-results}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python}
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv | tee "$OUT/gpu.txt"

# eval: 2 rounds, alternating, compiled (about 3 minutes with the compiles)
timeout 240 "$PYTHON" benchmarks/benchmark.py --device cuda --only eval --runtimes eager auto --compile \
    --repeats 2 --warmup 5 --iters 20 --json "$OUT/eval.json" | tee "$OUT/eval.md"
# training: bf16 autocast (Accelerate's bf16) and torch.compile (about 2 minutes)
timeout 150 "$PYTHON" benchmarks/benchmark.py --device cuda --only train --dtype bfloat16 --compile \
    --repeats 2 --warmup 5 --iters 20 --json "$OUT/train.json" | tee "$OUT/train.md"
# the training command itself: --mixed-precision auto resolves to bf16 on Ampere and later (about 1 minute)
timeout 90 "$PYTHON" train.py --dataset digits --model patchconvnet_ti12_p4 --epochs 1 --batch-size 256 \
    --mixed-precision auto --compile --output-dir "$OUT/digits" --overwrite | tail -3 | tee "$OUT/train_run.txt"
"$PYTHON" -c "import json, sys; print('mixed precision:', json.load(open(sys.argv[1]))['environment'][
    'mixed_precision'])" "$OUT/digits/metrics.json" | tee -a "$OUT/train_run.txt"
