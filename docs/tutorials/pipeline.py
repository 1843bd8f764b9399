"""The Quantum-Train pipeline, step by step: circuit -> probabilities -> transform -> mapping -> weights.

Run:  python docs/tutorials/pipeline.py [--quick] [--out DIR]

Writes DIR/pipeline_circuit.png (the circuit) and DIR/pipeline.png (what each stage
produces). Offline; a few seconds. --quick is the same (this one is already small).
"""

import argparse
import math
from pathlib import Path

import torch

import qtrain
from qtrain.models import IrisMLP

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="CI mode (the same here: the tutorial is already tiny)")
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures", help="where the figures go")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# 1. The target: an ordinary nn.Module. Its trainable parameters, in named_parameters()
#    order and flattened row-major, are the M weights QT generates.
target = IrisMLP()  # 4 -> 10 -> 3 with a ReLU
qt = qtrain.QuantumTrain(target, qtrain.QTConfig(depth=1, seed=0))
M, N = qt.n_generated, qt.n_qubits
print(f"M = {M} weights -> N = ceil(log2 M) = {N} qubits, 2^N = {2**N} basis states")
for slot in qt.layout.slots:
    print(f"  {slot.name:12s} {tuple(slot.shape)} at offset {slot.offset}")

# 2. The circuit: N wires, depth L blocks of the papers' u3-cu3-ring ansatz.
print(qt.qnn.draw(path=args.out / "pipeline_circuit.png"))

gen = qt.generator
with torch.no_grad():
    # 3. Its 2^N Born probabilities (exact here; shots=K would estimate them).
    p = gen.source()
    # 4. The transform x_i = (beta tanh(gamma 2^(N-1) p_i))^alpha - mean, first M kept.
    x = gen.transform(p)
    # 5. The mapping: row i = [bits of i as +-1, x_i] -> one weight, per-tensor scale.
    w = gen()
print(f"p: {tuple(p.shape)}, sums to {p.sum():.4f}; x: {tuple(x.shape)}; w: {tuple(w.shape)}")

# 6. The weights drive the target through functional_call: qt(x) is target(x) with w.
logits = qt(torch.randn(5, 4))
plain = qt.merge_and_unload()  # an IrisMLP holding w: no qtrain needed from here on
assert torch.allclose(plain(torch.ones(1, 4)), qt(torch.ones(1, 4)), atol=1e-6)
print(f"logits {tuple(logits.shape)}; trainable: {qt.n_trainable} (QNN {qt.qnn.weights.numel()} angles + mapping)")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
ax = axes[0]
ax.bar(range(2**N), p.numpy(), width=1.0, color=["#1f77b4" if i < M else "#bbbbbb" for i in range(2**N)])
ax.set(title=f"1. probabilities p_i (2^{N} = {2**N}; first M = {M} used)", xlabel="basis state i", ylabel="p_i")
ax = axes[1]
ax.plot(range(M), x.numpy(), ".", ms=4)
ax.set(title="2. transformed x_i (mean-centred)", xlabel="i", ylabel="x_i")
ax = axes[2]
for slot in qt.layout.slots:
    n = math.prod(slot.shape)
    idx = range(slot.offset, slot.offset + n)
    ax.plot(list(idx), w[slot.offset : slot.offset + n].numpy(), ".", ms=5, label=slot.name)
ax.set(title="3. mapping output: weights w_i, by tensor", xlabel="weight index i", ylabel="w_i")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(args.out / "pipeline.png", dpi=110)
print(f"wrote {args.out / 'pipeline.png'} and {args.out / 'pipeline_circuit.png'}")
