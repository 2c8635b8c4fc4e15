#!/usr/bin/env bash
# Session 2: SynBench at the paper's defaults (2048 realizations per scale and split) for 10
# encoders trained here, beside their linear-probe accuracy on real data; two lanes, one thread each.
set -uo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=10000000000
SB="python experiments/synbench/run_encoder.py --out artifacts/synbench2/results"
one() { local name=$1; shift; [ -f artifacts/synbench2/results/$name.json ] && return
  echo "[$(date -u +%H:%M:%S)] $name"; $SB --name $name "$@" > artifacts/synbench2/logs/$name.log 2>&1; echo "[$(date -u +%H:%M:%S)] $name rc=$?"; }
mkdir -p artifacts/synbench2/logs
lane1() {
  one mnist-std --checkpoint artifacts/zoo2/mnist-std/model.safetensors --robust-probe
  one fmnist-pgd0 --checkpoint artifacts/transfer/sources-small/linf-0-s0/model.safetensors
  one fmnist-pgd0.1 --checkpoint artifacts/transfer/sources-small/linf-0.1-s0/model.safetensors
  one mnist-mi --checkpoint artifacts/vulnerability2/enc-mnist/mi/model.safetensors --layer logits
  one fmnist-simclr --checkpoint artifacts/contrastive/fashion-mnist/simclr-s0/model.safetensors
}
lane2() {
  one mnist-pgd03 --checkpoint artifacts/zoo2/mnist-pgd/model.safetensors --robust-probe
  one fmnist-pgd0.05 --checkpoint artifacts/transfer/sources-small/linf-0.05-s0/model.safetensors
  one fmnist-pgd0.2 --checkpoint artifacts/transfer/sources-small/linf-0.2-s0/model.safetensors
  one mnist-wcmi --checkpoint artifacts/vulnerability2/enc-mnist/worst-case-mi/model.safetensors --layer logits
  one fmnist-intnacl --checkpoint artifacts/contrastive/fashion-mnist/intnacl-positive-s0/model.safetensors
}
lane1 & lane2 & wait
python experiments/synbench/summarize.py artifacts/synbench2/results
