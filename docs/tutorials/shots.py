"""Shots, noise and gradient estimators: what a quantum device would cost.

Run:  python docs/tutorials/shots.py [--quick] [--out DIR]

Part 1 measures how far K-shot estimates of a circuit's 2^N probabilities are from the
exact ones; part 2 adds readout and depolarizing noise; part 3 trains the Iris MLP
through QT with exact probabilities, 1,000-shot surrogate gradients and 1,000-shot
parameter-shift gradients. Writes DIR/shots.png. Full mode: about a minute on 2 cores;
--quick: fewer shot values, 2 epochs on a subset.
"""

import argparse
from pathlib import Path

import torch

import qtrain
from qtrain.data import load_dataset
from qtrain.models import IrisMLP
from qtrain.train import TrainConfig, fit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="CI mode: 3 shot values, 2 epochs on 48 examples")
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures", help="where the figure goes")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# --- 1. K shots estimate 2^N probabilities: the error falls as K^-1/2 ---------------------
N, L = 6, 2
exact_qnn = qtrain.QNN(N, depth=L, ansatz="ry-cnot-ring", seed=0)
p = exact_qnn.probabilities().detach()
shots_grid = [100, 1_000, 10_000] if args.quick else [100, 1_000, 10_000, 100_000, 1_000_000]
tv = []
for K in shots_grid:
    errors = []
    for draw in range(5):
        device = qtrain.QNN(N, depth=L, ansatz="ry-cnot-ring", shots=K, sample_seed=draw)
        device.load_state_dict(exact_qnn.state_dict(), strict=False)  # the same angles
        with torch.no_grad():
            errors.append(0.5 * (device() - p).abs().sum().item())  # total variation distance
    tv.append(sum(errors) / len(errors))
    print(f"K = {K:>9,} shots: total variation to the exact distribution {tv[-1]:.4f}")

# --- 2. noise acts on the distribution, before sampling -----------------------------------
for kw in ({"readout_error": 0.02}, {"depolarizing": 0.05}):
    noisy = qtrain.QNN(N, depth=L, ansatz="ry-cnot-ring", **kw)
    noisy.load_state_dict(exact_qnn.state_dict(), strict=False)
    with torch.no_grad():
        print(f"{kw}: total variation {0.5 * (noisy() - p).abs().sum().item():.4f}")

# --- 3. what a training step costs, and what each estimator learns --------------------------
for method in ("backprop", "parameter-shift", "spsa"):
    q = qtrain.QNN(7, depth=2, ansatz="ry-cnot-ring", shots=1_000, diff_method=method)
    print(f"{method:16s}: {q.executions_per_step():>3} circuit executions per step, each with 1,000 shots")

data = load_dataset("iris", seed=0)
if args.quick:
    data = data.subset(48, 30)
epochs = 2 if args.quick else 25
runs = {
    "exact": {},
    "1,000 shots, surrogate (backprop)": {"shots": 1_000},
    "1,000 shots, parameter-shift": {"shots": 1_000, "diff_method": "parameter-shift"},
}
curves = {}
for label, kw in runs.items():
    torch.manual_seed(0)
    qt = qtrain.QuantumTrain(IrisMLP(), qtrain.QTConfig(depth=2, ansatz="ry-cnot-ring", seed=0, **kw))
    history = fit(qt, data, TrainConfig(epochs=epochs, batch_size=16, lr=1e-2), progress=False)
    curves[label] = [h["test_acc"] for h in history]
    print(f"{label:36s}: test accuracy {100 * curves[label][-1]:.1f}% after {epochs} epochs")

# the trained circuit, as a device would take it (OpenQASM 3)
print("\n".join(qt.qnn.to_qasm().splitlines()[:6]) + "\n...")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
ax = axes[0]
ax.loglog(shots_grid, tv, "o-", label="measured (mean of 5 draws)")
ax.loglog(shots_grid, [tv[0] * (shots_grid[0] / K) ** 0.5 for K in shots_grid], "k--", lw=0.8, label="K^-1/2")
ax.set(xlabel="shots K per execution", ylabel="total variation to exact", title=f"estimating 2^{N} probabilities")
ax.legend()
ax = axes[1]
for label, acc in curves.items():
    ax.plot(range(1, epochs + 1), [100 * a for a in acc], "o-", ms=3, label=label)
ax.set(xlabel="epoch", ylabel="test accuracy %", title="Iris MLP through QT (ry-cnot-ring, L = 2)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(args.out / "shots.png", dpi=110)
print(f"wrote {args.out / 'shots.png'}")
