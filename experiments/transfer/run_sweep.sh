#!/usr/bin/env bash
# Transfer sweep (Salman et al. 2020) on CPU: every finished source in artifacts/transfer/sources
# -> MNIST and the bundled demo set, fixed-feature and full-network, 3 seeds.
# Resumable: rerun at will; finished cells (one JSON each) are skipped.
# Usage: bash experiments/transfer/run_sweep.sh [fixed|full|selfcheck|all]
#   selfcheck: each source transferred (fixed, seed 0) back to Fashion-MNIST on its own 34 %
#   training subset: should reproduce the source's own test accuracy.
set -euo pipefail
WHAT=${1:-all}
SRC=${SRC:-artifacts/transfer/sources}
OUT=${OUT:-artifacts/transfer/sweep}
export ROBREP_DATA=${ROBREP_DATA:-/work/shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
SOURCES=()
for name in linf-0 linf-0.05 linf-0.1 linf-0.2 l2-1 l2-2; do
  [ -f "$SRC/$name-s0/model.safetensors" ] && SOURCES+=("$name=$SRC/$name-s0/model.safetensors")
done
echo "sources: ${SOURCES[*]}" >&2
# adversarial accuracy on the target: PGD-10, Linf eps 0.05, first 500 test images
EVAL="--eval-norm linf --eval-eps 0.05 --eval-steps 10 --eval-n 500 --seeds 0 1 2 --quiet --json"
sweep() { nice -n 10 robrep transfer-sweep --sources "${SOURCES[@]}" $EVAL "$@" | tail -n 1 | cut -c1-300; }
if [[ $WHAT == fixed || $WHAT == all ]]; then
  # fixed-feature: the paper's schedule exactly (150 epochs, lr 0.01 x0.1 at 50/100, batch 64, SGD m0.9 wd5e-4);
  # cheap because frozen features are cached.
  sweep --targets mnist --fractions 0.01 0.1 --modes fixed --epochs 150 --out "$OUT"
  sweep --targets demo --fractions 0.1 1.0 --modes fixed --epochs 150 --out "$OUT"
fi
if [[ $WHAT == full || $WHAT == all ]]; then
  # full-network: CPU-sized, 30 epochs, lr 0.01 (the larger value of the paper's grid {0.01, 0.001}:
  # 0.001 does not converge in 30 epochs of 10 steps), x0.1 every 10 epochs; small fractions only.
  sweep --targets mnist --fractions 0.01 --modes full --epochs 30 --lr 0.01 --out "$OUT"
  sweep --targets demo --fractions 0.1 --modes full --epochs 30 --lr 0.01 --out "$OUT"
fi
if [[ $WHAT == selfcheck || $WHAT == all ]]; then
  sweep --targets fashion-mnist --fractions 0.34 --modes fixed --epochs 150 --seeds 0 --out artifacts/transfer/selfcheck
fi
