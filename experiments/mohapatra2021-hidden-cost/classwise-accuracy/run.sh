#!/usr/bin/env bash
# Runs the hidden-cost experiment (all four models).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OMP_NUM_THREADS=1 nice -n 10 python experiments/mohapatra2021-hidden-cost/classwise-accuracy/hidden_cost.py --num "${NUM:-300}" --n "${N:-32}"
