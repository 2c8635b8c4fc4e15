#!/usr/bin/env bash
# Session 2: contrastive adversarial methods (issue 8) and the transfer sweep of the robust
# sources (issue 5); both resumable (finished runs / cells are skipped).
set -uo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=10000000000
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
C="--n-train 4000 --epochs 3 --train-steps 2 --eval-n 500 --eval-steps 10 --adv-probe"
log "contrastive fmnist s0"; python experiments/contrastive/run.py --dataset fashion-mnist --seeds 0 $C --out artifacts/contrastive/fashion-mnist
log "contrastive fmnist s1"; python experiments/contrastive/run.py --dataset fashion-mnist --seeds 1 $C --out artifacts/contrastive/fashion-mnist
log "contrastive mnist s0"; python experiments/contrastive/run.py --dataset mnist --seeds 0 $C --out artifacts/contrastive/mnist
log "transfer"; SRC=artifacts/transfer/sources-small OUT=artifacts/transfer/sweep-small bash experiments/transfer/run_sweep.sh fixed-small full fixed-large
log "lane C done"
