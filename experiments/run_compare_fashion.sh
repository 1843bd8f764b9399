#!/usr/bin/env bash
# issue 7's FashionMNIST (full 60k/10k) comparison at two budgets: 3 epochs of batch 128
# (1,266 steps per run, 54k train + 6k validation for the lr search); rerun to continue.
export OMP_NUM_THREADS=1
# --centering global: the study began before per-tensor centring became the mlp mapping's default
qtrain compare --centering global --dataset fashion-mnist --model paper-cnn --budget-from depth=4 depth=16 --seeds 0 1 2 \
  --epochs 3 --batch-size 128 --lrs 1e-3 3e-3 1e-2 --out experiments/compare-fashion --no-progress
