#!/usr/bin/env bash
# Source models for the transfer sweep (Salman et al. 2020, docs/methods/transfer.md), CPU-sized:
# small-cnn on Fashion-MNIST, PGD adversarial training at an eps grid, 3 epochs, SGD lr 0.05 cosine.
# Recipe "large" (default): 34 % of the training set (20k images, class-balanced, seeded), PGD-5.
# Recipe "small" (FRACTION=0.1 STEPS=3 OUT=artifacts/transfer/sources-small): 6k images, PGD-3,
# step 2.5 eps/3 -- what fitted the shared CPU (load ~40 on 2 cores) for the full eps grid.
# Usage: bash experiments/salman2020/robust-transfer/train_sources.sh [SEED [NAME...]]   (resumable: --resume)
# NAME in linf-0 linf-0.05 linf-0.1 linf-0.2 l2-1 l2-2 (default: all, one after the other;
# separate invocations with different names may run in parallel).
set -euo pipefail
SEED=${1:-0}
shift || true
ONLY=("$@")
OUT=${OUT:-artifacts/transfer/sources}
FRACTION=${FRACTION:-0.34}
STEPS=${STEPS:-5}
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
COMMON="--model small-cnn --dataset fashion-mnist --epochs 3 --train-fraction $FRACTION --eval-n 1000 --eval-steps 10 --seed $SEED --quiet --json"
run() {  # name objective norm eps [extra]
  if [ ${#ONLY[@]} -gt 0 ] && [[ ! " ${ONLY[*]} " =~ " $1 " ]]; then return; fi
  local dir="$OUT/$1-s$SEED"
  if [ -f "$dir/model.safetensors" ]; then echo "skip $dir"; return; fi
  nice -n 10 robrep train $COMMON --objective "$2" --norm "$3" --eps "$4" ${5:-} --out "$dir" --resume | tail -n 1
}
run linf-0 standard linf 0
run linf-0.1 pgd linf 0.1 "--objective-arg steps=$STEPS"
run linf-0.05 pgd linf 0.05 "--objective-arg steps=$STEPS"
run linf-0.2 pgd linf 0.2 "--objective-arg steps=$STEPS"
run l2-1 pgd l2 1.0 "--objective-arg steps=$STEPS"
run l2-2 pgd l2 2.0 "--objective-arg steps=$STEPS"
