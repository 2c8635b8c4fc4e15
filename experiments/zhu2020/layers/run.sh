#!/usr/bin/env bash
# Layer-by-layer representation vulnerability of a standard and a PGD-trained MNIST model with
# robrep's default estimator settings (preset standard), Fano bound beside the linear probe's
# PGD-20 accuracy. Usage: experiments/zhu2020/layers/run.sh STD.safetensors PGD.safetensors OUTDIR [EPS]
set -euo pipefail
std=$1; pgd=$2; out=$3; eps=${4:-0.3}
mkdir -p "$out"
for pair in "std:$std" "pgd:$pgd"; do
  name=${pair%%:*}; ck=${pair#*:}
  python -m robrep vulnerability --checkpoint "$ck" --dataset mnist --n 1000 --eps "$eps" \
      --layer conv1,conv2,fc1,logits --json --quiet --out "$out/$name" > "$out/$name.json"
done
python experiments/zhu2020/layers/table.py "$out/std.json" "$out/pgd.json"
