#!/usr/bin/env bash
# Semantify-NN acceptance runs: verified vs attacked ranges on MNIST zoo models.
# Usage: N=100 NROT=100 bash experiments/semantic/run.sh   (results in artifacts/semantic/<model>-<transform>/)
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-/work/shared/data}
export OMP_NUM_THREADS=1
N=${N:-100}
NROT=${NROT:-$N}
MODELS=${MODELS:-"mnist-std mnist-pgd"}
for m in $MODELS; do
  ck=artifacts/zoo/$m/model.safetensors
  for tr in brightness contrast; do
    nice -n 10 robrep semantic --checkpoint "$ck" --transform "$tr" --n "$N" --eps 1.0 --delta 0.05 --verify --quiet --json \
      --out "artifacts/semantic/$m-$tr" | tail -n 1 > "artifacts/semantic/$m-$tr.json"
  done
  nice -n 10 robrep semantic --checkpoint "$ck" --transform rotation --n "$NROT" --eps 30 --delta 1 --subdiv 10 --verify --quiet --json \
    --out "artifacts/semantic/$m-rotation" | tail -n 1 > "artifacts/semantic/$m-rotation.json"
done
python experiments/semantic/table.py artifacts/semantic
