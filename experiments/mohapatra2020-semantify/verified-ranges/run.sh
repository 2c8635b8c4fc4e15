#!/usr/bin/env bash
# Mohapatra et al. (2020, Semantify-NN): semantic verified vs attacked ranges on the first N test images
#  - colour transforms (hue, saturation, lightness) on a 3-channel model: small-cnn trained 2 epochs
#    on `colored-mnist` (MNIST digits in a random colour per image; robrep's dataset registry)
#  - brightness, contrast and rotation on the MNIST standard and PGD (linf 0.3) small-cnn models
# Results: $OUT/<model>-<transform>.json (summary) and $OUT/<model>-<transform>/ (per image).
#   N=100 bash experiments/mohapatra2020-semantify/verified-ranges/run.sh ; python experiments/mohapatra2020-semantify/verified-ranges/table.py artifacts/semantic
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
N=${N:-100}; OUT=${OUT:-artifacts/semantic}; ZOO=${ZOO:-artifacts/zoo}
CM=$OUT/colored-mnist-std
if [ ! -f $CM/model.safetensors ]; then
  robrep train --dataset colored-mnist --model small-cnn --objective standard --epochs 2 --batch-size 128 --optimizer adam \
    --lr 0.001 --schedule cosine --eval-n 1000 --seed 0 --quiet --json --out $CM | tail -1 > $CM.train.json
fi
run() {  # model-name checkpoint transform extra-args...
  local name=$1 ck=$2 tr=$3; shift 3
  [ -f "$OUT/$name-$tr.json" ] && return 0
  robrep semantic --checkpoint "$ck" --transform "$tr" --n "$N" --verify --quiet --json --out "$OUT/$name-$tr" "$@" \
    | tail -n 1 > "$OUT/$name-$tr.json.tmp" && mv "$OUT/$name-$tr.json.tmp" "$OUT/$name-$tr.json"
  echo "$name $tr done $(date -u +%H:%M:%S)"
}
run colored-mnist-std $CM/model.safetensors hue --eps 3 --delta 0.2
run colored-mnist-std $CM/model.safetensors saturation --eps 1 --delta 0.05
run colored-mnist-std $CM/model.safetensors lightness --eps 1 --delta 0.05
for m in mnist-std mnist-pgd; do
  run $m $ZOO/$m/model.safetensors brightness --eps 1 --delta 0.05
  run $m $ZOO/$m/model.safetensors contrast --eps 1 --delta 0.05
done
# rotation is the expensive one (one CROWN pass per implicit sub-box, ~0.1 s each; 0.1-deg sub-boxes are
# needed: 0.4-deg ones certified only 3 of 30 deg on image 0): eps 10 deg in 1-deg intervals,
# each split into 10 sub-boxes, on the standard model (ROT_MODELS="mnist-std mnist-pgd" for both)
for m in ${ROT_MODELS:-mnist-std}; do
  run $m $ZOO/$m/model.safetensors rotation --eps 10 --delta 1 --subdiv 10
done
