#!/usr/bin/env bash
# Robustness cards of six encoders of four kinds on the bundled demo data, and their leaderboard.
# Sizes are the quick budget made smaller (shared 2-core CPU); tv/timm/HF models have random
# weights (no pretrained weights can be downloaded here) and run at 64 px, which their cards say.
#   bash experiments/profile/cards.sh OUT_DIR
set -euo pipefail
OUT=${1:-runs/profile-cards}
mkdir -p "$OUT"
SETS=(--set probe_train_n=500 --set test_n=200 --set probe_eval_n=50 --set probe_eval_steps=5 --set mi_n=192
      --set mi_steps=20 --set mi_batch=32 --set synbench_n=64 --set sensitivity_n=32 --set sensitivity_steps=5
      --set cert_n=10 --set cert_samples=100 --set picture_n=4 --set vis_steps=20)
COMMON=(--dataset demo --eps 0.1 --budget quick "${SETS[@]}" --overwrite --quiet)
# robrep's own small CNNs: standard and PGD-trained (2 epochs each on the demo data)
[ -f "$OUT/train-standard/model.safetensors" ] || robrep train --model small-cnn --dataset demo --objective standard --epochs 2 --eval-n 200 --out "$OUT/train-standard" --quiet
[ -f "$OUT/train-robust/model.safetensors" ] || robrep train --model small-cnn --dataset demo --objective pgd --eps 0.1 --epochs 2 --eval-n 200 --out "$OUT/train-robust" --quiet
robrep profile "$OUT/train-standard/model.safetensors" --name small-cnn-standard --out "$OUT/small-cnn-standard" "${COMMON[@]}"
robrep profile "$OUT/train-robust/model.safetensors" --name small-cnn-pgd --out "$OUT/small-cnn-pgd" "${COMMON[@]}"
robrep profile init:small-cnn --name small-cnn-untrained --out "$OUT/small-cnn-untrained" "${COMMON[@]}"
robrep profile init:tv:resnet18 --input-shape 3 64 64 --name tv-resnet18-random --out "$OUT/tv-resnet18" "${COMMON[@]}"
robrep profile init:timm:vit_small_patch16_224 --input-shape 3 64 64 --name timm-vit-s16-random --out "$OUT/timm-vit-s16" "${COMMON[@]}"
python "$(dirname "$0")/hf_vit.py" "$OUT/hf-vit-tiny" --eps 0.1 "${SETS[@]}"
robrep compare "$OUT"/small-cnn-standard "$OUT"/small-cnn-pgd "$OUT"/small-cnn-untrained "$OUT"/tv-resnet18 "$OUT"/timm-vit-s16 \
  "$OUT"/hf-vit-tiny --out "$OUT/compare" --title "robrep compare: six encoders on the demo data"
