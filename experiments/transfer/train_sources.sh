#!/usr/bin/env bash
# Source models for the transfer sweep (Salman et al. 2020, sec. 8 of methods.md), CPU-sized:
# small-cnn on Fashion-MNIST, PGD adversarial training at an eps grid,
# 34 % of the training set (20k images, class-balanced, seeded), 3 epochs, SGD lr 0.05 cosine
# (sized for a shared 2-core CPU: PGD-5, step 2.5 eps/5).
# Usage: bash experiments/transfer/train_sources.sh [SEED]   (resumable: --resume)
set -euo pipefail
SEED=${1:-0}
OUT=${OUT:-artifacts/transfer/sources}
export ROBREP_DATA=${ROBREP_DATA:-/work/shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
COMMON="--model small-cnn --dataset fashion-mnist --epochs 3 --train-fraction 0.34 --eval-n 1000 --eval-steps 10 --seed $SEED --quiet --json"
run() {  # name objective norm eps
  local dir="$OUT/$1-s$SEED"
  if [ -f "$dir/model.safetensors" ]; then echo "skip $dir"; return; fi
  nice -n 10 robrep train $COMMON --objective "$2" --norm "$3" --eps "$4" ${5:-} --out "$dir" --resume | tail -n 1
}
run linf-0 standard linf 0
run linf-0.1 pgd linf 0.1 "--objective-arg steps=5"
run linf-0.05 pgd linf 0.05 "--objective-arg steps=5"
run linf-0.2 pgd linf 0.2 "--objective-arg steps=5"
run l2-1 pgd l2 1.0 "--objective-arg steps=5"
run l2-2 pgd l2 2.0 "--objective-arg steps=5"
