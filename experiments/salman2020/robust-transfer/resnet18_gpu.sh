#!/usr/bin/env bash
# Not yet run (needs a GPU): the same sweep with a torchvision ResNet-18 on 32x32 inputs.
# Sources: tv:resnet18 trained on CIFAR-10 with L2 PGD at the paper's small-eps grid and Linf
# {0, 2, 4, 8}/255; targets CIFAR-100 and SVHN (1 % / 10 %), both modes, 3 seeds.
# Expect ~1-2 GPU-hours on one H100 for the sources (30 epochs each) and ~1 h for the sweep.
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-$HOME/.cache/robrep/data}
SRC=artifacts/transfer/resnet18/sources
T="--model tv:resnet18 --dataset cifar10 --epochs 30 --batch-size 256 --lr 0.1 --schedule step --amp --quiet --json"
robrep train $T --objective standard --out $SRC/linf-0-s0 --resume
for e in 0.25 0.5 1.0; do robrep train $T --objective pgd --norm l2 --eps $e --objective-arg steps=7 --out $SRC/l2-$e-s0 --resume; done
for e in 0.00784 0.01569 0.03137; do robrep train $T --objective pgd --norm linf --eps $e --objective-arg steps=7 --out $SRC/linf-$e-s0 --resume; done
S=(); for d in $SRC/*-s0; do S+=("$(basename $d | sed 's/-s0$//')=$d/model.safetensors"); done
E="--eval-norm linf --eval-eps 0.00784 --eval-steps 20 --eval-n 1000 --seeds 0 1 2 --quiet --json --download"
robrep transfer-sweep --sources "${S[@]}" --targets cifar100 svhn --fractions 0.01 0.1 --modes fixed --epochs 150 $E --out artifacts/transfer/resnet18/sweep
robrep transfer-sweep --sources "${S[@]}" --targets cifar100 svhn --fractions 0.01 0.1 --modes full --epochs 50 --lr 0.01 $E --out artifacts/transfer/resnet18/sweep
