#!/usr/bin/env bash
# Ko et al. (2022), SynBench score vs linear-probe accuracy: SynBench at the paper's defaults (2048
# realizations per scale and split) for 10 encoders trained in this repository, beside their
# linear-probe accuracy on real data; two processes of one thread each. Finished encoders are skipped.
# The checkpoints come from other experiments (paths below; set them with the variables):
#   ZOO      mnist-std / mnist-pgd: experiments/madry2018/mnist-linf03 (standard.sh, the PGD-5 recipe)
#   SOURCES  experiments/salman2020/robust-transfer/train_sources.sh with FRACTION=0.1 STEPS=3
#   VULN     experiments/zhu2020/vulnerability/encoders.py --n-train 2000 --epochs 2
#   CONTR    experiments/ko2022-nca/robust-contrastive/run.py
# Results: docs/reproductions/ko2022-synbench-score-vs-probe.md.
set -uo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=1 ROBREP_PROGRESS=0
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=10000000000
OUT=${OUT:-artifacts/ko2022-synbench/score-vs-probe}
ZOO=${ZOO:-artifacts/zoo}; SOURCES=${SOURCES:-artifacts/transfer/sources-small}
VULN=${VULN:-artifacts/vulnerability/enc-mnist}; CONTR=${CONTR:-artifacts/contrastive}
SB="python experiments/ko2022-synbench/score-vs-probe/run_encoder.py --out $OUT/results"
one() { local name=$1; shift; [ -f $OUT/results/$name.json ] && return
  echo "[$(date -u +%H:%M:%S)] $name"; $SB --name $name "$@" > $OUT/logs/$name.log 2>&1; echo "[$(date -u +%H:%M:%S)] $name rc=$?"; }
mkdir -p $OUT/logs
first() {
  one mnist-std --checkpoint $ZOO/mnist-std/model.safetensors --robust-probe
  one fmnist-pgd0 --checkpoint $SOURCES/linf-0-s0/model.safetensors
  one fmnist-pgd0.1 --checkpoint $SOURCES/linf-0.1-s0/model.safetensors
  one mnist-mi --checkpoint $VULN/mi/model.safetensors --layer logits
  one fmnist-simclr --checkpoint $CONTR/fashion-mnist/simclr-s0/model.safetensors
}
second() {
  one mnist-pgd03 --checkpoint $ZOO/mnist-pgd/model.safetensors --robust-probe
  one fmnist-pgd0.05 --checkpoint $SOURCES/linf-0.05-s0/model.safetensors
  one fmnist-pgd0.2 --checkpoint $SOURCES/linf-0.2-s0/model.safetensors
  one mnist-wcmi --checkpoint $VULN/worst-case-mi/model.safetensors --layer logits
  one fmnist-intnacl --checkpoint $CONTR/fashion-mnist/intnacl-positive-s0/model.safetensors
}
first & second & wait
python experiments/ko2022-synbench/score-vs-probe/summarize.py $OUT/results
