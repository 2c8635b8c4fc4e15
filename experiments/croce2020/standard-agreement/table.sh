#!/usr/bin/env bash
# The acceptance table: robrep autoattack-standard beside the reference standard on the first
# N test images (default 1,000) of three models, chunked and resumable (table/<name>/*.json;
# rerun to continue). Models go to $MODELS (default /work/models/aa):
#   mnist-core   the MNIST core model's recipe (docs/reproductions/madry2018-mnist-linf03.md)
#                reduced to $CORE_EPOCHS epochs (default 1 instead of 10), linf 0.3
#   fmnist-tiny  benchmarks/bench_autoattack.py's Fashion-MNIST CNN (PGD-2, 250 steps), linf 0.1 and l2 1.5
#   demo-robust  the robust model `robrep demo` trains (copy its out/robust folder there), linf 0.1
#   mnist-core-10ep  the MNIST core model's recipe at its 10 epochs (`core10`), linf 0.3
#   fmnist-pgd   the Fashion-MNIST PGD model of experiments/zoo/train_zoo.sh (`fmnist`), linf 0.1 and l2 1.5
# RESULTS: where the chunks go (default table/ here). START/END: image range of this invocation
# (default 0 and N), so that two processes can share a model's images.
# Usage: bash experiments/croce2020/standard-agreement/table.sh core|core10|fmnist|others [N]
#        python experiments/croce2020/standard-agreement/table.py summary
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
M=${MODELS:-/work/models/aa}
n=${2:-1000}
tab() { python "$here/table.py" run --results "${RESULTS:-$here/table}" "$@"; }
case "$1" in
core|core10)
  if [ "$1" = core10 ]; then name=mnist-core-10ep; epochs=10; else name=mnist-core; epochs=${CORE_EPOCHS:-1}; fi
  if [ ! -f "$M/$name/model.safetensors" ]; then
    rm -rf "$M/.tmp-$name"
    python -m robrep train --dataset mnist --model small-cnn --model-arg width=32 --model-arg feat_dim=256 \
      --objective pgd --eps 0.3 --eps-warmup 0.25 --objective-arg steps=10 --objective-arg step_size=0.075 \
      --objective-arg llr=1 --epochs "$epochs" --batch-size 128 --optimizer adam --lr 0.001 --schedule cosine \
      --eval-n 0 --seed 0 --threads 1 --quiet --json --out "$M/.tmp-$name" | tail -1 > "$M/$name.train.json"
    mv "$M/.tmp-$name" "$M/$name"
  fi
  tab --name "$name" --checkpoint "$M/$name/model.safetensors" --dataset mnist --norm linf --eps 0.3 \
    --start "${START:-0}" --n "${END:-$n}" --chunk 50
  ;;
fmnist)
  if [ ! -f "$M/fmnist-pgd/model.safetensors" ]; then
    rm -rf "$M/.tmp-fmnist-pgd"
    python -m robrep train --dataset fashion-mnist --objective pgd --eps 0.1 --eps-warmup 0.3 --objective-arg steps=10 \
      --objective-arg step_size=0.025 --model small-cnn --epochs 6 --batch-size 128 --optimizer adam --lr 0.002 \
      --schedule cosine --eval-n 1000 --threads 1 --quiet --json --out "$M/.tmp-fmnist-pgd" | tail -1 > "$M/fmnist-pgd.train.json"
    mv "$M/.tmp-fmnist-pgd" "$M/fmnist-pgd"
  fi
  tab --name fmnist-pgd-linf --checkpoint "$M/fmnist-pgd/model.safetensors" --dataset fashion-mnist --eps 0.1 \
    --start "${START:-0}" --n "${END:-$n}" --chunk 50
  tab --name fmnist-pgd-l2 --checkpoint "$M/fmnist-pgd/model.safetensors" --dataset fashion-mnist --norm l2 --eps 1.5 \
    --start "${START:-0}" --n "${END:-$n}" --chunk 50
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
*) echo "usage: table.sh core|core10|fmnist|others [N]" >&2; exit 2 ;;
esac
