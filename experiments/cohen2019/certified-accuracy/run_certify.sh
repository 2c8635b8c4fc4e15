#!/usr/bin/env bash
# Certify the first NUM MNIST test images with the noise-trained model of one sigma: one resumable
# `robrep certify` run in chunks of CHUNK images. Each finished chunk is stored atomically in
#   $OUT/$DATASET-sigma$SIGMA-n$N/chunks/chunk-NNNNN.json  (per-image rows + the run's fingerprint);
# when all are done the same folder gets record.json, result.json, per_image.json, certify.tsv and
# certified_accuracy.png. Rerunning the script after an interruption continues with the missing
# chunks (--resume); seeds are per image index, so the result equals one uninterrupted run.
# Order 1 gives the zeroth-order (Cohen) radius from the same samples.
# Folders made by the earlier shell loop (chunk-NNNN/ subfolders, each a complete run) are left
# alone; report.py reads both layouts.
# usage: SIGMA=0.25 NUM=100 ./experiments/cohen2019/certified-accuracy/run_certify.sh
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data}
export OMP_NUM_THREADS=1
SIGMA=${SIGMA:?set SIGMA}; NUM=${NUM:-100}; CHUNK=${CHUNK:-20}; N=${N:-10000}; DATASET=${DATASET:-mnist}
MODELS=${MODELS:-artifacts/certification/models}; OUT=${OUT:-artifacts/certification/certify}
DIR="$OUT/$DATASET-sigma$SIGMA-n$N"
if compgen -G "$DIR/chunk-[0-9]*" > /dev/null; then  # made by the earlier shell loop: keep it
  echo "sigma=$SIGMA: $DIR holds the earlier chunk-NNNN/ layout (report.py reads it); set OUT to rerun"; exit 0
fi
robrep certify --checkpoint "$MODELS/$DATASET-noise-$SIGMA/model.safetensors" --sigma "$SIGMA" \
  --order 1 --n "$N" --n0 100 --alpha 0.001 --batch-size 1000 --num "$NUM" --chunk-size "$CHUNK" --seed 0 \
  --quiet --out "$DIR" --resume > /dev/null
echo "sigma=$SIGMA done $(date -u +%H:%M:%S)"
