#!/usr/bin/env bash
# Full certification reproduction (CPU sizing): three sigmas in parallel, each waiting for its model.
set -euo pipefail
cd "$(dirname "$0")/../../.."
for s in 0.25 0.5 1.0; do
  ( while [ ! -f artifacts/certification/models/mnist-noise-$s/model.safetensors ]; do sleep 20; done
    SIGMA=$s NUM=${NUM:-100} ./experiments/cohen2019/certified-accuracy/run_certify.sh ) &
done
wait
