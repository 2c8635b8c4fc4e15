#!/usr/bin/env bash
# Shared small models used by several reproductions (artifacts/zoo/, git-ignored).
# small-cnn on MNIST and Fashion-MNIST: standard, and PGD-AT (linf; MNIST eps 0.3, F-MNIST eps 0.1).
set -euo pipefail
Z=${ZOO:-artifacts/zoo}
common="--model small-cnn --epochs 6 --batch-size 128 --optimizer adam --lr 0.002 --schedule cosine --eval-n 1000 --quiet --json"
robrep train --dataset mnist --objective standard $common --out $Z/mnist-std
robrep train --dataset fashion-mnist --objective standard $common --out $Z/fmnist-std
robrep train --dataset mnist --objective pgd --eps 0.3 --eps-warmup 0.3 --objective-arg steps=10 --objective-arg step_size=0.05 $common --out $Z/mnist-pgd
robrep train --dataset fashion-mnist --objective pgd --eps 0.1 --eps-warmup 0.3 --objective-arg steps=10 --objective-arg step_size=0.025 $common --out $Z/fmnist-pgd
