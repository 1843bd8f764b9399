#!/usr/bin/env bash
# issue 7's MNIST-subset comparison at two budgets (rerun to continue; ~2 h on one core)
export OMP_NUM_THREADS=1
# --centering global: the study began before per-tensor centring became the mlp mapping's default
qtrain compare --centering global --dataset mnist --model paper-cnn --budget-from depth=4 depth=16 --seeds 0 1 2 \
  --epochs 10 --lrs 1e-3 3e-3 1e-2 --out experiments/compare-mnist --no-progress
