#!/usr/bin/env bash
# Madry et al. (2018), MNIST linf eps=0.3: PGD-10 adversarial training with a local-linearity
# penalty (llr=1, Qin et al. 2019) for 10 epochs on two CPU threads (51:38 wall on a 2-core CPU),
# then PGD-50 (step 0.01, 3 restarts) and APGD-CE + APGD-DLR on all 10,000 test images:
# clean 98.31 %, PGD-50 92.70 %, APGD 90.88 % (gap 1.82). docs/reproductions/madry2018-mnist-linf03.md.
# The evaluations are chunked and resumable: rerun after an interruption with SKIP_TRAIN=1.
set -euo pipefail
THREADS=${THREADS:-2} EVAL_THREADS=${EVAL_THREADS:-2} EPOCHS=${EPOCHS:-10} LLR=${LLR:-1} \
  OUT=${OUT:-artifacts/madry2018/mnist-linf03/llr1-10ep} bash "$(dirname "$0")/recipe.sh"
