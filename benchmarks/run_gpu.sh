#!/usr/bin/env bash
# GPU benchmarks: PGD-10 on ResNet-18, batch 512, bf16 autocast and fp32, against the plain loop
# and the peers; adversarial training vs (K+1) standard epochs; robrep --precision auto (bf16,
# channels-last, float32 verdicts) vs robrep fp32 vs torchattacks fp32 (bench_precision.py); the
# AutoAttack standard, robrep's (fp32 and auto) and fast beside the reference (bench_autoattack.py).
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
# AutoAttack protocols on the GPU: the MNIST core recipe (one epoch) trained here, then the reference
# standard, robrep's standard (fp32 and --precision auto) and fast on the same 1,000 test images
# (needs ROBREP_DATA with MNIST; times are wall seconds after a synchronize).
robrep train --dataset mnist --model small-cnn --model-arg width=32 --model-arg feat_dim=256 --objective pgd --eps 0.3 \
  --eps-warmup 0.25 --objective-arg steps=10 --objective-arg step_size=0.075 --objective-arg llr=1 --epochs 1 \
  --batch-size 128 --optimizer adam --lr 0.001 --schedule cosine --eval-n 0 --seed 0 --device cuda --quiet \
  --out "$OUT/mnist-core" | tail -n 1
python benchmarks/bench_autoattack.py --device cuda --checkpoint "$OUT/mnist-core/model.safetensors" --dataset mnist \
  --eps 0.3 --n 1000 --json "$OUT/autoattack-mnist-core.json" | tee "$OUT/autoattack-mnist-core.md"
