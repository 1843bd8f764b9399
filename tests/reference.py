"""An independent dense-matrix simulator: every gate is a full 2^N x 2^N unitary
built with Kronecker products and applied by matrix-vector products.

Imports nothing from qtrain; the ansaetze are written from their documented layouts
(issue 3 / METHOD.md), so a layout mismatch in the library fails the tests too.
"""

from __future__ import annotations

import numpy as np

I2 = np.eye(2, dtype=complex)
P0 = np.array([[1, 0], [0, 0]], dtype=complex)
P1 = np.array([[0, 0], [0, 1]], dtype=complex)
X = np.array([[0, 1], [1, 0]], dtype=complex)
Z = np.array([[1, 0], [0, -1]], dtype=complex)
H = np.array([[1, 1], [1, -1]], dtype=complex) / np.sqrt(2)


def ry(t):
    return np.array([[np.cos(t / 2), -np.sin(t / 2)], [np.sin(t / 2), np.cos(t / 2)]], dtype=complex)


def rz(t):
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def u3(t, p, l):
    c, s = np.cos(t / 2), np.sin(t / 2)
    return np.array([[c, -np.exp(1j * l) * s], [np.exp(1j * p) * s, np.exp(1j * (p + l)) * c]])


def embed(ops: dict[int, np.ndarray], n: int) -> np.ndarray:
    """kron over wires 0..n-1 (wire 0 leftmost = most significant bit)."""
    out = np.eye(1, dtype=complex)
    for w in range(n):
        out = np.kron(out, ops.get(w, I2))
    return out


def controlled(u, c, t, n):
    return embed({c: P0}, n) + embed({c: P1, t: u}, n)


def ring(n):
    return [(k, (k + 1) % n) for k in range(n)] if n >= 2 else []


def chain(n):
    return [(k, k + 1) for k in range(n - 1)]


def unitary(ansatz: str, w: np.ndarray, n: int) -> np.ndarray:
    U = np.eye(2**n, dtype=complex)

    def apply(g):
        nonlocal U
        U = g @ U

    if ansatz == "ry-rz-cz":
        for k in range(n):
            apply(embed({k: H}, n))
    for l in range(w.shape[0]):
        if ansatz == "u3-cu3-ring":
            for k in range(n):
                apply(embed({k: u3(*w[l, 0, k])}, n))
            for c, t in ring(n):
                apply(controlled(u3(*w[l, 1, c]), c, t, n))
        elif ansatz in ("ry-cnot-ring", "ry-cnot-chain"):
            for k in range(n):
                apply(embed({k: ry(w[l, k])}, n))
            for c, t in ring(n) if ansatz == "ry-cnot-ring" else chain(n):
                apply(controlled(X, c, t, n))
        elif ansatz == "ry-rz-cz":
            rot = ry if l % 2 == 0 else rz
            for k in range(n):
                apply(embed({k: rot(w[l, k])}, n))
            for c, t in chain(n):
                apply(controlled(Z, c, t, n))
        else:
            raise KeyError(ansatz)
    return U


def probabilities(ansatz: str, w: np.ndarray, n: int) -> np.ndarray:
    psi = unitary(ansatz, np.asarray(w, dtype=float), n)[:, 0]
    return np.abs(psi) ** 2


WEIGHT_SHAPES = {
    "u3-cu3-ring": lambda n, d: (d, 2, n, 3),
    "ry-cnot-ring": lambda n, d: (d, n),
    "ry-cnot-chain": lambda n, d: (d, n),
    "ry-rz-cz": lambda n, d: (d, n),
}


def generator_gradcheck(generator, n_generated: int, seed: int = 0) -> bool:
    """torch.autograd.gradcheck of a (float64) generator's output, projected on a random
    vector, with respect to all its trainable parameters (through functional_call)."""
    import torch

    names = [n for n, p in generator.named_parameters() if p.requires_grad]
    proj = torch.randn(n_generated, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

    def f(*values):
        return torch.func.functional_call(generator, dict(zip(names, values)), ()) @ proj

    inputs = tuple(p.detach().clone().requires_grad_() for p in generator.parameters() if p.requires_grad)
    return torch.autograd.gradcheck(f, inputs, atol=1e-6)
