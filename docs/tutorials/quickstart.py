"""Train your own model through QT: wrap it in two lines, train, evaluate, unwrap.

Run:  python docs/tutorials/quickstart.py [--quick] [--out DIR]

A small CNN on scikit-learn's 8x8 digits (offline), trained through QT and, for
reference, classically with the same loop. Writes DIR/quickstart_curves.png.
Full mode: 20 epochs (about a minute on 2 cores); --quick: 2 epochs on a subset.
"""

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import qtrain
from qtrain.data import load_dataset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="CI mode: 2 epochs on 96 training images")
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures", help="where the figure goes")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)


class SmallCNN(nn.Module):
    """Any nn.Module works; qtrain never touches its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.gelu(self.conv(x)), 2)  # (B, 16, 4, 4)
        return self.fc2(F.gelu(self.fc1(x.flatten(1))))


data = load_dataset("digits", seed=0)  # 8x8 images, 80 / 20 split by seed
if args.quick:
    data = data.subset(96, 64)
epochs = 2 if args.quick else 20

# The two lines: wrap, and hand the wrapper's parameters (QNN angles + mapping) to the optimiser.
qt = qtrain.QuantumTrain(SmallCNN(), qtrain.QTConfig(depth=4, seed=0))
qt.print_trainable_parameters()


def train(model: nn.Module, label: str) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(data.y_train), generator=g).split(32):
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(data.y_train))
    # evaluation: generate the weights once for the whole pass, not once per batch
    cache = model.cached_weights() if isinstance(model, qtrain.QuantumTrain) else torch.enable_grad()
    with torch.no_grad(), cache:
        acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    print(f"{label:10s} {epochs} epochs: test accuracy {100 * acc:.1f}%, {time.perf_counter() - t0:.1f} s")
    return losses


qt_losses = train(qt, "QT")
classical = SmallCNN()
classical_losses = train(classical, "classical")

# Unwrap: a plain SmallCNN holding the generated weights (no qtrain needed to use it).
plain = qt.merge_and_unload()
with torch.no_grad():
    assert torch.allclose(plain(data.x_test[:8]), qt(data.x_test[:8]), atol=1e-5)
print(f"plain {type(plain).__name__}: {sum(p.numel() for p in plain.parameters()):,} weights, "
      f"trained through {qt.n_trainable:,} QT parameters")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.plot(range(1, epochs + 1), qt_losses, "o-", label=f"QT ({qt.n_trainable:,} trainable)")
ax.plot(range(1, epochs + 1), classical_losses, "s-", label=f"classical ({qt.n_generated:,} trainable)")
ax.set(xlabel="epoch", ylabel="training cross-entropy", title="SmallCNN on 8x8 digits")
ax.legend()
fig.tight_layout()
fig.savefig(args.out / "quickstart_curves.png", dpi=110)
print(f"wrote {args.out / 'quickstart_curves.png'}")
