#!/usr/bin/env bash
# Waits for the standard model, then runs the hidden-cost experiment (all four models).
set -euo pipefail
cd "$(dirname "$0")/../.."
while [ ! -f artifacts/certification/models/mnist-std/model.safetensors ]; do sleep 20; done
OMP_NUM_THREADS=1 nice -n 10 python experiments/certification/hidden_cost.py --num "${NUM:-500}" --n "${N:-100}"
