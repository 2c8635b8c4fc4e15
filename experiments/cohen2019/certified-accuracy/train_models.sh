#!/usr/bin/env bash
# Train the small-cnn MNIST models used by the certification reproduction:
# Gaussian-noise augmentation at sigma in {0.25, 0.5, 1.0}, same recipe (Adam 2e-3, cosine,
# batch 128, 3 epochs, seed 0). WITH_STD=1 also trains a standard model with this recipe (the
# reported hidden-cost run used the shared zoo model artifacts/zoo/mnist-std instead: 6 epochs).
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data}
OUT=${OUT:-artifacts/certification/models}
DATASET=${DATASET:-mnist}
COMMON=(--dataset "$DATASET" --model small-cnn --epochs 3 --optimizer adam --lr 0.002 --batch-size 128 --seed 0 --eval-n 1000 --quiet)
for s in 0.25 0.5 1.0; do
  nice -n 10 robrep train "${COMMON[@]}" --objective noise --objective-arg sigma=$s --out "$OUT/$DATASET-noise-$s"
done
if [ "${WITH_STD:-0}" = 1 ]; then
  nice -n 10 robrep train "${COMMON[@]}" --objective standard --out "$OUT/$DATASET-std"
fi
