#!/usr/bin/env bash
# Session 2: after the issue-2 training, idle-machine benchmarks, then the 10k evaluations.
set -uo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} ROBREP_PROGRESS=0
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=10000000000
OUT=artifacts/core/mnist-linf03
B=artifacts/bench-s2; mkdir -p $B
while [ ! -s $OUT/model.safetensors ] || pgrep -f "robrep train --dataset mnist" > /dev/null; do sleep 10; done
echo "[$(date -u +%H:%M:%S)] training done"
python benchmarks/bench_pgd.py --checkpoint $OUT/model.safetensors --dataset mnist --norms linf l2 --batch 256 --repeats 7 \
  --json $B/pgd-mnist-checkpoint.json > $B/pgd-mnist-checkpoint.md 2>&1
echo "[$(date -u +%H:%M:%S)] bench_pgd done"
python benchmarks/bench_train.py --model small-cnn --batch 128 --steps 10 --batches 20 --repeats 3 --json $B/train-small-cnn.json > $B/train-small-cnn.md 2>&1
echo "[$(date -u +%H:%M:%S)] bench_train done"
robrep eval --checkpoint $OUT/model.safetensors --attack pgd --steps 50 --step-size 0.01 --restarts 3 --eps 0.3 --quiet --json \
  --out $OUT-eval-pgd50 --resume > $OUT.pgd50.json
echo "[$(date -u +%H:%M:%S)] pgd50 done"
robrep eval --checkpoint $OUT/model.safetensors --attack apgd --steps 100 --eps 0.3 --quiet --json \
  --out $OUT-eval-apgd --resume > $OUT.apgd.json
echo "[$(date -u +%H:%M:%S)] apgd done"
