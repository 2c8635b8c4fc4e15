#!/usr/bin/env bash
# The acceptance table: robrep autoattack-standard beside the reference standard on the first
# N test images (default 1,000) of three models, chunked and resumable (table/<name>/*.json;
# rerun to continue). Models go to $MODELS (default /work/models/aa):
#   mnist-core   the MNIST core model's recipe (docs/reproductions/madry2018-mnist-linf03.md)
#                reduced to $CORE_EPOCHS epochs (default 1 instead of 10), linf 0.3
#   fmnist-tiny  benchmarks/bench_autoattack.py's Fashion-MNIST CNN (PGD-2, 250 steps), linf 0.1 and l2 1.5
#   demo-robust  the robust model `robrep demo` trains (copy its out/robust folder there), linf 0.1
# RESULTS: where the chunks go (default table/ here).
# Usage: bash experiments/croce2020/standard-agreement/table.sh core|others [N]
#        python experiments/croce2020/standard-agreement/table.py summary
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
M=${MODELS:-/work/models/aa}
n=${2:-1000}
tab() { python "$here/table.py" run --results "${RESULTS:-$here/table}" "$@"; }
case "$1" in
core)
  if [ ! -f "$M/mnist-core/model.safetensors" ]; then
    rm -rf "$M/.tmp-mnist-core"
    python -m robrep train --dataset mnist --model small-cnn --model-arg width=32 --model-arg feat_dim=256 \
      --objective pgd --eps 0.3 --eps-warmup 0.25 --objective-arg steps=10 --objective-arg step_size=0.075 \
      --objective-arg llr=1 --epochs "${CORE_EPOCHS:-1}" --batch-size 128 --optimizer adam --lr 0.001 --schedule cosine \
      --eval-n 0 --seed 0 --threads 1 --quiet --json --out "$M/.tmp-mnist-core" | tail -1 > "$M/mnist-core.train.json"
    mv "$M/.tmp-mnist-core" "$M/mnist-core"
  fi
  tab --name mnist-core --checkpoint "$M/mnist-core/model.safetensors" --dataset mnist --norm linf --eps 0.3 --n "$n" --chunk 50
  ;;
others)
  if [ ! -f "$M/fmnist-tiny/fashion-mnist-elu-eps0.1-steps250.safetensors" ]; then
    rm -rf "$M/.tmp-fmnist-tiny"
    python -c "import sys; sys.path.insert(0, '$root/benchmarks'); from pathlib import Path; import torch; \
torch.set_num_threads(1); from bench_autoattack import train; train('fashion-mnist', 0.1, 250, Path('$M/.tmp-fmnist-tiny'))"
    mv "$M/.tmp-fmnist-tiny" "$M/fmnist-tiny"
  fi
  f="tiny-cnn:$M/fmnist-tiny/fashion-mnist-elu-eps0.1-steps250.safetensors"
  # rounds of 100 images per model, so every model has results when the run is stopped
  for s in $(seq 0 100 $((n - 1))); do
    tab --name demo-robust --checkpoint "$M/demo-robust/model.safetensors" --dataset demo --eps 0.1 --start "$s" --n $((s + 100))
    tab --name fmnist-tiny-linf --checkpoint "$f" --dataset fashion-mnist --eps 0.1 --start "$s" --n $((s + 100))
    tab --name fmnist-tiny-l2 --checkpoint "$f" --dataset fashion-mnist --norm l2 --eps 1.5 --start "$s" --n $((s + 100))
  done
  ;;
*) echo "usage: table.sh core|others [N]" >&2; exit 2 ;;
esac
