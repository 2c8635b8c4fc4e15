#!/usr/bin/env bash
# GPU benchmarks : PGD-10 on ResNet-18, batch 512, bf16 autocast and fp32,
# against the plain loop and the peers; adversarial training vs (K+1) standard epochs.
# GPU benchmarks: PGD-10 on ResNet-18, batch 512, bf16 autocast and fp32, against the plain loop
# and the peers; adversarial training vs (K+1) standard epochs; robrep --precision auto (bf16,
# channels-last, float32 verdicts) vs robrep fp32 vs torchattacks fp32 (bench_precision.py).
#   bash benchmarks/run_gpu.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-bench-out-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python benchmarks/bench_pgd.py --device cuda --models resnet18 --norms linf l2 --batch 512 --amp bf16 --channels-last \
  --repeats 10 --json "$OUT/pgd-resnet18-bf16.json" | tee "$OUT/pgd-resnet18-bf16.md"
python benchmarks/bench_pgd.py --device cuda --models resnet18 --norms linf --batch 512 --repeats 10 \
  --json "$OUT/pgd-resnet18-fp32.json" | tee "$OUT/pgd-resnet18-fp32.md"
python benchmarks/bench_pgd.py --device cuda --models resnet18 --norms linf --batch 512 --amp bf16 --channels-last --compile \
  --only robrep --repeats 10 | tee "$OUT/pgd-resnet18-bf16-compile.md"
python benchmarks/bench_train.py --device cuda --model resnet18 --batch 512 --steps 10 --batches 20 --repeats 3 --amp --channels-last \
  --json "$OUT/train-resnet18-bf16.json" | tee "$OUT/train-resnet18-bf16.md"
python benchmarks/bench_precision.py --device cuda --batch 512 --threads 4 --repeats 5 --cert-samples 100000 --train-batches 20 \
  --json "$OUT/precision.json" | tee "$OUT/precision.md"
