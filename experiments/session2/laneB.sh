#!/usr/bin/env bash
# Session-2 acceptance queue (one thread, run beside the core evaluation). Each step is skipped if
# its result exists, so the queue can be restarted.
set -uo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=10000000000
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
step() { local done_file=$1; shift; if [ -e "$done_file" ]; then log "skip $done_file"; return; fi
  log "start: $*"; local t0=$SECONDS; "$@"; log "rc=$? $((SECONDS-t0)) s: $1 $2 $3"; }
VIS="--zoo artifacts/zoo2 --n 100 --steps 300 --step-size 0.1 --extra-step-sizes= --brittle-eps 3 --brittle-steps 100 --n-other 20 --vis-steps 150 --add-steps 200 --components 3 --search-n 2000 --figures docs/figures/visualization"
step artifacts/visualization2/mnist/metrics.json python experiments/visualization/run.py --datasets mnist $VIS --out artifacts/visualization2
step artifacts/visualization2/fashion-mnist/metrics.json python experiments/visualization/run.py --datasets fashion-mnist $VIS --out artifacts/visualization2
step artifacts/vulnerability2/enc-mnist/record.json python experiments/vulnerability/encoders.py --dataset mnist --n-train 2000 --n-test 500 \
    --epochs 2 --probe-epochs 10 --adv-probe-epochs 2 --steps 100 --out artifacts/vulnerability2/enc-mnist
SB="python experiments/synbench/run_encoder.py --out artifacts/synbench2/results"
step artifacts/synbench2/results/mnist-std.json $SB --name mnist-std --checkpoint artifacts/zoo2/mnist-std/model.safetensors --robust-probe
step artifacts/synbench2/results/mnist-pgd03.json $SB --name mnist-pgd03 --checkpoint artifacts/zoo2/mnist-pgd/model.safetensors --robust-probe
for e in 0 0.05 0.1 0.2; do
  step artifacts/synbench2/results/fmnist-pgd$e.json $SB --name fmnist-pgd$e --checkpoint artifacts/transfer/sources-small/linf-$e-s0/model.safetensors
done
step artifacts/synbench2/results/mnist-mi.json $SB --name mnist-mi --checkpoint artifacts/vulnerability2/enc-mnist/mi/model.safetensors --layer logits
step artifacts/synbench2/results/mnist-wcmi.json $SB --name mnist-wcmi --checkpoint artifacts/vulnerability2/enc-mnist/worst-case-mi/model.safetensors --layer logits
step artifacts/synbench2/results/fmnist-simclr.json $SB --name fmnist-simclr --checkpoint artifacts/contrastive/fashion-mnist/simclr-s0/model.safetensors
step artifacts/vulnerability2/zoo-mnist/zoo_layers.png python experiments/vulnerability/zoo_layers.py --dataset mnist --zoo mnist --zoo-dir artifacts/zoo2 --eps 0.3 --out artifacts/vulnerability2/zoo-mnist
step artifacts/vulnerability2/zoo-fmnist/zoo_layers.png python experiments/vulnerability/zoo_layers.py --dataset fashion-mnist --zoo fmnist --zoo-dir artifacts/zoo2 --eps 0.1 --out artifacts/vulnerability2/zoo-fmnist
step artifacts/vulnerability2/enc-fashion-mnist/record.json python experiments/vulnerability/encoders.py --dataset fashion-mnist --n-train 2000 --n-test 500 \
    --epochs 2 --probe-epochs 10 --adv-probe-epochs 2 --steps 100 --out artifacts/vulnerability2/enc-fashion-mnist
log "lane B done"
