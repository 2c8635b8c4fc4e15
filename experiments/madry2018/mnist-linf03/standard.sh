#!/usr/bin/env bash
# Madry et al. (2018) MNIST, the standard baseline: same architecture, standard training, then PGD-50 at eps 0.3.
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data}
OUT=${OUT:-artifacts/madry2018/mnist-linf03/standard}
robrep train --dataset mnist --model small-cnn --model-arg width=32 --model-arg feat_dim=256 --objective standard \
  --epochs 6 --batch-size 128 --optimizer adam --lr 0.001 --schedule cosine --eval-n 1000 --seed 0 --quiet --json --out $OUT 2> $OUT.train.log | tail -1 > $OUT.train.json
robrep eval --checkpoint $OUT/model.safetensors --attack pgd --steps 50 --step-size 0.01 --restarts 1 --eps 0.3 --quiet --json > $OUT.pgd50.json
