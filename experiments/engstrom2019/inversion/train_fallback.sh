#!/usr/bin/env bash
# Fallback robust models for the visualization reproduction, used only when the zoo's PGD models
# (experiments/zoo/train_zoo.sh: 6 epochs, 10-step PGD) are not available in time: the same
# small-cnn and threat models (MNIST linf 0.3, F-MNIST linf 0.1), trained cheaply on CPU
# (2 epochs on 25% of the training set, 5-step PGD). Outputs in artifacts/visualization/models/.
set -euo pipefail
O=${OUT:-artifacts/visualization/models}
common="--model small-cnn --epochs 2 --train-fraction 0.25 --batch-size 128 --optimizer adam --lr 0.002 --schedule cosine --eval-n 500 --quiet --json"
robrep train --dataset mnist --objective pgd --eps 0.3 --eps-warmup 0.3 --objective-arg steps=5 --objective-arg step_size=0.08 $common --out $O/mnist-pgd
robrep train --dataset fashion-mnist --objective pgd --eps 0.1 --eps-warmup 0.3 --objective-arg steps=5 --objective-arg step_size=0.03 $common --out $O/fmnist-pgd
