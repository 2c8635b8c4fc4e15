#!/usr/bin/env bash
# Issue 2 acceptance recipe (session 5, meets every line): MNIST linf eps=0.3, PGD-10 adversarial
# training with a local-linearity penalty (llr=1, Qin et al. 2019) for 10 epochs on both cores
# (51:38 wall here), then PGD-50 (step 0.01, 3 restarts) and APGD-CE + APGD-DLR on all 10,000 test
# images: clean 98.31 %, PGD-50 92.70 %, APGD 90.88 % (gap 1.82). Numbers: docs/reproductions.md, "Session 5".
# The evaluations are chunked and resumable: rerun after an interruption with SKIP_TRAIN=1.
set -euo pipefail
THREADS=${THREADS:-2} EVAL_THREADS=${EVAL_THREADS:-2} EPOCHS=${EPOCHS:-10} LLR=${LLR:-1} \
  OUT=${OUT:-artifacts/core/s5-llr1-10ep} bash "$(dirname "$0")/mnist_linf_s4.sh"
