#!/usr/bin/env bash
# MNIST linf recipes with knobs: train (one thread by default, so two candidates can run side by
# side, one per core), then evaluate at eps 0.3 on all 10,000 test images with PGD-50 (step 0.01,
# 3 restarts) and APGD-CE + APGD-DLR (100 steps), chunked and resumable.
# Results of each recipe: docs/reproductions/madry2018-mnist-linf03.md, "Recipes compared"
# (the headline recipe, LLR=1 THREADS=2 EPOCHS=10, is experiments/madry2018/mnist-linf03/run.sh).
# Knobs: THREADS (training threads, default 1), EVAL_THREADS, EPS_TRAIN (training eps, default 0.3), ACT (small-cnn activation: relu or a smooth one),
# ATTACK, STEPS, EPOCHS, LLR (local-linearity penalty weight, default 0 = off), OUT.  Usage: ATTACK=apgd EPOCHS=6 OUT=artifacts/madry2018/mnist-linf03/apgd-e0.3 bash experiments/madry2018/mnist-linf03/recipe.sh
export MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-0} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-10000000000}
set -euo pipefail
export ROBREP_DATA=${ROBREP_DATA:-../shared/data}
EPS_TRAIN=${EPS_TRAIN:-0.3}; ACT=${ACT:-relu}; STEPS=${STEPS:-10}; EPOCHS=${EPOCHS:-7}
ATTACK=${ATTACK:-pgd}  # training attack: pgd (step 2.5 eps / STEPS) or apgd (APGD-CE, its own steps)
if [ "$ATTACK" = apgd ]; then ATTACK_ARGS="--objective-arg attack=apgd"
else ATTACK_ARGS="--objective-arg step_size=$(python -c "print(round(2.5 * $EPS_TRAIN / $STEPS, 5))")"; fi
if [ "${LLR:-0}" != 0 ]; then ATTACK_ARGS="$ATTACK_ARGS --objective-arg llr=$LLR"; fi
OUT=${OUT:-artifacts/madry2018/mnist-linf03/$ACT-e$EPS_TRAIN}
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  OMP_NUM_THREADS=${THREADS:-1} /usr/bin/time -v robrep train --dataset mnist --model small-cnn --model-arg width=32 --model-arg feat_dim=256 \
    --model-arg act=$ACT --objective pgd --eps $EPS_TRAIN --eps-warmup 0.25 --objective-arg steps=$STEPS \
    $ATTACK_ARGS --epochs $EPOCHS --batch-size 128 --optimizer adam --lr 0.001 --schedule cosine \
    --eval-n 1000 --eval-steps 10 --seed 0 --json --out $OUT 2> $OUT.train.log | tail -1 > $OUT.train.json
fi
OMP_NUM_THREADS=${EVAL_THREADS:-1} robrep eval --checkpoint $OUT/model.safetensors --attack pgd --steps 50 --step-size 0.01 --restarts 3 --eps 0.3 --quiet --json \
  --out $OUT-eval-pgd50 --resume > $OUT.pgd50.json
OMP_NUM_THREADS=${EVAL_THREADS:-1} robrep eval --checkpoint $OUT/model.safetensors --attack apgd --steps 100 --eps 0.3 --quiet --json \
  --out $OUT-eval-apgd --resume > $OUT.apgd.json
