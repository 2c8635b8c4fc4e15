#!/usr/bin/env bash
# Certification and semantic verification on Fashion-MNIST (CPU sizing): noise-trained small-cnn models (sigma 0.25 / 0.5 / 1.0,
# the MNIST recipe), certification of the first NUM test images (n = 10,000, order 1), and the
# semantic brightness / contrast verification of the standard and PGD (linf 0.1) F-MNIST models.
#   NUM=100 bash experiments/cohen2019/certified-accuracy/fmnist.sh
#   python experiments/cohen2019/certified-accuracy/report.py --runs certify-fmnist --dataset fashion-mnist
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
NUM=${NUM:-100}; MODELS=artifacts/certification/models
for s in 0.25 0.5 1.0; do
  [ -f $MODELS/fashion-mnist-noise-$s/model.safetensors ] || robrep train --dataset fashion-mnist --model small-cnn --epochs 3 \
    --optimizer adam --lr 0.002 --batch-size 128 --seed 0 --eval-n 1000 --quiet --objective noise --objective-arg sigma=$s \
    --out $MODELS/fashion-mnist-noise-$s
done
for s in 0.25 0.5 1.0; do
  DATASET=fashion-mnist SIGMA=$s NUM=$NUM CHUNK=50 OUT=artifacts/certification/certify-fmnist ./experiments/cohen2019/certified-accuracy/run_certify.sh
done
N=$NUM ZOO=artifacts/zoo OUT=artifacts/semantic bash -c '
for m in fmnist-std fmnist-pgd; do
  for tr in brightness contrast; do
    [ -f $OUT/$m-$tr.json ] && continue
    robrep semantic --checkpoint $ZOO/$m/model.safetensors --transform $tr --n $N --eps 1 --delta 0.05 --verify --quiet --json \
      --out $OUT/$m-$tr | tail -n 1 > $OUT/$m-$tr.json.tmp && mv $OUT/$m-$tr.json.tmp $OUT/$m-$tr.json
    echo "$m $tr done $(date -u +%H:%M:%S)"
  done
done'
