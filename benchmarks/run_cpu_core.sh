#!/usr/bin/env bash
# The CPU benchmarks on ONE dedicated core with one torch thread, for a machine whose other cores
# are busy with other work (ratios inside one table stay valid; absolute times are single-thread):
#   CORE=0 bash benchmarks/run_cpu_core.sh [OUT_DIR]
# The ResNet-18 tables of run_cpu.sh (3 repeats; REPEATS=5 for more) plus ResNet-18 under bf16 autocast
# (on CPUs with AVX512-BF16/AMX), the training ratio and the certify/SynBench/vulnerability runtimes;
# SMALL=1 adds the small-CNN PGD table (measured idle with two threads in docs/benchmarks/index.md).
set -euo pipefail
OUT=${1:-bench-out-core}; CORE=${CORE:-0}
export OMP_NUM_THREADS=1 MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-0} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-10000000000}
mkdir -p "$OUT"
T="taskset -c $CORE"
$T python benchmarks/bench_pgd.py --threads 1 --models resnet18 --norms linf l2 --batch 32 --repeats ${REPEATS:-3} --json "$OUT/pgd-resnet18.json" | tee "$OUT/pgd-resnet18.md"
$T python benchmarks/bench_pgd.py --threads 1 --models resnet18 --norms linf --batch 32 --repeats 3 --amp bf16 --only robrep torchattacks \
  --json "$OUT/pgd-resnet18-bf16.json" | tee "$OUT/pgd-resnet18-bf16.md"
[ "${SMALL:-0}" = 1 ] && $T python benchmarks/bench_pgd.py --threads 1 --models small-cnn --norms linf l2 --batch 256 --repeats 7 \
  --json "$OUT/pgd-small-cnn.json" | tee "$OUT/pgd-small-cnn.md"
$T python benchmarks/bench_train.py --threads 1 --model small-cnn --batch 128 --steps 10 --batches 20 --repeats 3 --json "$OUT/train-small-cnn.json" | tee "$OUT/train-small-cnn.md"
$T python benchmarks/bench_train.py --threads 1 --model resnet18 --batch 32 --steps 10 --batches 3 --repeats 3 --json "$OUT/train-resnet18.json" | tee "$OUT/train-resnet18.md"
$T python benchmarks/bench_certify.py --threads 1 | tee "$OUT/certify.txt"
$T python benchmarks/bench_synbench.py --threads 1 | tee "$OUT/synbench.txt"
$T python benchmarks/bench_vulnerability.py --threads 1 | tee "$OUT/vulnerability.txt"
