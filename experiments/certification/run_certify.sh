#!/usr/bin/env bash
# Certify the first NUM MNIST test images with the noise-trained model of one sigma, in chunks of
# CHUNK images (each chunk is a complete `robrep certify` run; seeds are per image index, so the
# merged chunks equal one run). Order 1 gives the zeroth-order (Cohen) radius from the same samples.
# usage: SIGMA=0.25 NUM=100 ./experiments/certification/run_certify.sh
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-/work/shared/data}
export OMP_NUM_THREADS=1
SIGMA=${SIGMA:?set SIGMA}; NUM=${NUM:-100}; CHUNK=${CHUNK:-20}; N=${N:-10000}; DATASET=${DATASET:-mnist}
MODELS=${MODELS:-artifacts/certification/models}; OUT=${OUT:-artifacts/certification/certify}
for ((s = 0; s < NUM; s += CHUNK)); do
  dir="$OUT/$DATASET-sigma$SIGMA-n$N/chunk-$(printf %04d $s)"
  [ -f "$dir/record.json" ] && continue
  nice -n 10 robrep certify --checkpoint "$MODELS/$DATASET-noise-$SIGMA/model.safetensors" --sigma "$SIGMA" \
    --order 1 --n "$N" --n0 100 --alpha 0.001 --batch-size 1000 --start "$s" --num "$CHUNK" --seed 0 \
    --quiet --out "$dir" > /dev/null
  echo "sigma=$SIGMA chunk $s done $(date -u +%H:%M:%S)"
done
