#!/usr/bin/env bash
# Every CPU benchmark, as recorded in docs/benchmarks/index.md. Run on an IDLE machine (load average
# well under the core count; the scripts warn otherwise), from the repository root:
#   bash benchmarks/run_cpu.sh [OUT_DIR]
# Set CKPT to a trained MNIST model (default: the MNIST linf-0.3 model of the reproductions) and ROBREP_DATA to
# the data folder; without the checkpoint the PGD tables use freshly initialised models.
set -euo pipefail
OUT=${1:-bench-out}
CKPT=${CKPT:-artifacts/madry2018/mnist-linf03/llr1-10ep/model.safetensors}
mkdir -p "$OUT"
if [ -f "$CKPT" ]; then
  python benchmarks/bench_pgd.py --models small-cnn --checkpoint "$CKPT" --dataset mnist --norms linf l2 \
    --batch 256 --repeats 7 --json "$OUT/pgd-mnist-checkpoint.json" | tee "$OUT/pgd-mnist-checkpoint.md"
fi
python benchmarks/bench_pgd.py --models small-cnn --norms linf l2 --batch 256 --repeats 7 --json "$OUT/pgd-small-cnn.json" | tee "$OUT/pgd-small-cnn.md"
python benchmarks/bench_pgd.py --models resnet18 --norms linf l2 --batch 32 --repeats 5 --json "$OUT/pgd-resnet18.json" | tee "$OUT/pgd-resnet18.md"
python benchmarks/bench_train.py --model small-cnn --batch 128 --steps 10 --batches 20 --repeats 3 --json "$OUT/train-small-cnn.json" | tee "$OUT/train-small-cnn.md"
python benchmarks/bench_train.py --model small-cnn --batch 128 --steps 10 --batches 20 --repeats 3 --mode step | tee "$OUT/train-small-cnn-step.md"
python benchmarks/bench_train.py --model resnet18 --batch 64 --steps 10 --batches 5 --repeats 3 --json "$OUT/train-resnet18.json" | tee "$OUT/train-resnet18.md"
python benchmarks/bench_certify.py --threads 1 | tee "$OUT/certify.txt"
python benchmarks/bench_synbench.py --threads 1 | tee "$OUT/synbench.txt"
python benchmarks/bench_vulnerability.py --threads 1 | tee "$OUT/vulnerability.txt"
