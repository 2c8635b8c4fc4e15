#!/usr/bin/env bash
# Two more small encoders for the SynBench acceptance study (artifacts/synbench/models, git-ignored):
# small-cnn on Fashion-MNIST with PGD-AT (linf) at eps 0.05 and 0.2. Sized for a shared 2-core CPU:
# 20% of the training set (12k images), 3 epochs, 5 PGD steps (the zoo uses 100%, 6 epochs, 10 steps).
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-/work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M=${MODELS:-artifacts/synbench/models}
common="--model small-cnn --epochs 3 --train-fraction 0.2 --batch-size 128 --optimizer adam --lr 0.002 --schedule cosine --eval-n 500 --eval-steps 5 --quiet --json"
run() { nice -n 10 robrep train --dataset fashion-mnist --objective pgd --eps "$1" --eps-warmup 0.3 --objective-arg steps=5 --objective-arg step_size="$2" $common --out "$M/$3"; }
run 0.05 0.025 fmnist-pgd005 &
run 0.2 0.1 fmnist-pgd020 &
wait
