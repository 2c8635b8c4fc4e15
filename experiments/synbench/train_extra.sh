#!/usr/bin/env bash
# Two more small encoders for the SynBench acceptance study (artifacts/synbench/models, git-ignored):
# small-cnn on Fashion-MNIST with PGD-AT (linf) at eps 0.05 and 0.2, 3 epochs (zoo uses 6), same optimizer as the zoo.
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-/work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M=${MODELS:-artifacts/synbench/models}
common="--model small-cnn --epochs 3 --batch-size 128 --optimizer adam --lr 0.002 --schedule cosine --eval-n 500 --quiet --json"
nice -n 10 robrep train --dataset fashion-mnist --objective pgd --eps 0.05 --eps-warmup 0.3 --objective-arg steps=7 --objective-arg step_size=0.0175 $common --out $M/fmnist-pgd005
nice -n 10 robrep train --dataset fashion-mnist --objective pgd --eps 0.2 --eps-warmup 0.3 --objective-arg steps=7 --objective-arg step_size=0.07 $common --out $M/fmnist-pgd020
