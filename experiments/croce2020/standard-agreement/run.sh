#!/usr/bin/env bash
# AutoAttack standard: robrep's autoattack-standard and fast protocols beside the reference
# implementation (pyautoattack) on the same models, images and eps; robust accuracy after every
# stage and wall times, measured one after the other in one process.
# Usage: bash experiments/croce2020/standard-agreement/run.sh [N_IMAGES]   (default 200)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
n="${1:-200}"
OMP_NUM_THREADS=1 python "$root/benchmarks/bench_autoattack.py" --n "$n" --train-steps 250 \
  --cache "${ROBREP_BENCH_CACHE:-$HOME/.cache/robrep/bench-autoattack}" --json "$here/result-n$n.json"
