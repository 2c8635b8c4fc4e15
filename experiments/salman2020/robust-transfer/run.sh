#!/usr/bin/env bash
# Transfer sweep (Salman et al. 2020) on CPU: every finished source in $SRC -> MNIST and the
# bundled demo set, fixed-feature and full-network, 3 seeds. Resumable: rerun at will; finished
# cells (one JSON file each) are skipped.
# Usage: [SRC=... OUT=... NAMES="linf-0 linf-0.1" ATTACK=... SEEDS=...] bash experiments/salman2020/robust-transfer/run.sh STAGE...
#   STAGE: fixed-small (MNIST 1 %, demo 10 %), full (same targets), fixed-large (MNIST 10 %,
#          demo 100 %), selfcheck (each source back to Fashion-MNIST, its own training subset
#          $SELF_FRACTION, seed 0: should reproduce the source's own test accuracy), all.
# NAMES restricts the sources; separate invocations may run in parallel (cells are separate files).
set -euo pipefail
SRC=${SRC:-artifacts/transfer/sources-small}
OUT=${OUT:-artifacts/transfer/sweep-small}
SELF_FRACTION=${SELF_FRACTION:-0.1}
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
SOURCES=()
for name in ${NAMES:-linf-0 linf-0.05 linf-0.1 linf-0.2 l2-1 l2-2}; do
  if [ -f "$SRC/$name-s0/model.safetensors" ]; then SOURCES+=("$name=$SRC/$name-s0/model.safetensors"); fi
done
echo "sources: ${SOURCES[*]}" >&2
# adversarial accuracy on the target: PGD-10 (ATTACK=autoattack-standard: the AutoAttack standard),
# Linf eps 0.05, first 500 test images; SEEDS: the transfer seeds (default 0 1 2)
EVAL="--eval-norm linf --eval-eps 0.05 --attack ${ATTACK:-pgd} --eval-steps 10 --eval-n 500 --seeds ${SEEDS:-0 1 2} --quiet --json"
# fixed-feature: the paper's schedule exactly (150 epochs, lr 0.01 x0.1 at 50/100, batch 64,
# SGD momentum 0.9, wd 5e-4); cheap because the frozen features are cached.
FIXED="--modes fixed --epochs 150"
# full-network: CPU-sized, 30 epochs, lr 0.01 (the larger value of the paper's grid {0.01, 0.001};
# 0.001 does not converge in 30 epochs of ~10 steps), x0.1 every 10 epochs.
FULL="--modes full --epochs 30 --lr 0.01"
sweep() { nice -n 10 robrep transfer-sweep --sources "${SOURCES[@]}" $EVAL "$@" --out "$OUT" | tail -n 1 | cut -c1-300; }
for STAGE in "$@"; do
  case $STAGE in
    fixed-small|all) sweep --targets mnist --fractions 0.01 $FIXED; sweep --targets demo --fractions 0.1 $FIXED ;;&
    full|all) sweep --targets mnist --fractions 0.01 $FULL; sweep --targets demo --fractions 0.1 $FULL ;;&
    fixed-large|all) sweep --targets mnist --fractions 0.1 $FIXED; sweep --targets demo --fractions 1.0 $FIXED ;;&
    selfcheck|all) OUT=$OUT-selfcheck sweep --targets fashion-mnist --fractions "$SELF_FRACTION" --modes fixed --epochs 150 --seeds 0 ;;
  esac
done
