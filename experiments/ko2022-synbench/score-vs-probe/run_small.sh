#!/usr/bin/env bash
# The SynBench acceptance study (docs/reproductions/ko2022-synbench-score-vs-probe.md). One process per encoder, nice 10,
# one thread each; results in artifacts/synbench/results/<name>.json, summary by summarize.py.
# n = 512 realizations per scale and split (paper 2048) to fit the shared CPU (mnist-std and mnist-random
# were also run at n = 1024: add --n 1024 --out artifacts/synbench/results1024).
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-/work/shared/data} OMP_NUM_THREADS=1
S=artifacts/synbench/models/snapshots
mkdir -p artifacts/synbench/logs "$S"
# snapshots of checkpoints that were still training (or were stopped) when the study ran
cp artifacts/transfer/sources/linf-0.1-s0/checkpoints/epoch-0001/model.safetensors $S/fmnist-tr-pgd01-ep2.safetensors
for e in 005 020; do cp artifacts/synbench/models/fmnist-pgd$e/checkpoints/epoch-0000/model.safetensors $S/fmnist-pgd$e-ep1.safetensors; done
run() { nice -n 10 python experiments/ko2022-synbench/score-vs-probe/run_encoder.py --n 512 --name "$@" > artifacts/synbench/logs/$1.log 2>&1 & }
run mnist-std --checkpoint artifacts/zoo/mnist-std/model.safetensors
run fmnist-std --checkpoint artifacts/zoo/fmnist-std/model.safetensors --robust-probe
run mnist-random --checkpoint random:mnist
run mnist-noise05 --checkpoint artifacts/certification/models/mnist-noise-0.5/model.safetensors
run fmnist-simclr --checkpoint artifacts/contrastive/fashion-mnist/simclr-s0/model.safetensors
run fmnist-tr-pgd01 --checkpoint $S/fmnist-tr-pgd01-ep2.safetensors
run fmnist-pgd005 --checkpoint $S/fmnist-pgd005-ep1.safetensors
run fmnist-pgd020 --checkpoint $S/fmnist-pgd020-ep1.safetensors
wait
python experiments/ko2022-synbench/score-vs-probe/summarize.py artifacts/synbench/results
