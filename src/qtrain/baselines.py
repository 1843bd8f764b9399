"""Classical stand-ins for the QNN at the same trainable budget, to measure what the
quantum part contributes.

Each probability source has the QNN's interface (a module whose call returns ``2^N``
probabilities), so the transform, mapping, injection and trainer are shared:

- ``FixedProbabilities``: ``"fixed-random"`` (a random distribution drawn once from the
  seed and kept as a saved buffer, so steps and resumes see the same vector) and
  ``"uniform"`` (the mapping alone);
- ``no_entanglement(ansatz)``: the ansatz with every entangling gate removed (a CU3
  becomes a U3 on its target): a product state;
- ``TensorTrainBorn``: ``p = psi^2 / |psi|^2`` with ``psi`` a real tensor train (MPS) over
  the N index bits; the bond dimension is chosen to match the budget;
- ``LowRankBorn``: ``psi`` the 2^N vector reshaped to ``2^ceil(N/2) x 2^floor(N/2)`` and
  factorised as ``U V^T`` of rank r.

``SubspaceGenerator`` replaces the whole generator (no mapping): ``w = w0 + P z`` with the
model's own initial weights ``w0``, a fixed structured random projection ``P`` (a
Fastfood-style product of random signs, Hadamard transforms and a permutation; O(M log M))
and trainable ``z`` of the budget's size (Li et al. 2018, "intrinsic dimension").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .circuits import Ansatz, Op
from .circuits.gates import GATES

__all__ = [
    "FixedProbabilities",
    "LowRankBorn",
    "SubspaceGenerator",
    "TensorTrainBorn",
    "fwht",
    "no_entanglement",
    "tt_bond_for_budget",
    "low_rank_for_budget",
]


class FixedProbabilities(nn.Module):
    """A constant probability vector: ``"uniform"`` (all ``2^-N``) or ``"fixed-random"``
    (exponential draws normalised: the Porter-Thomas shape of a random circuit's output).

    The vector is a persistent buffer: saved, restored on resume, never re-drawn.
    """

    def __init__(self, n_qubits: int, kind: str, *, generator: torch.Generator, dtype=torch.float32) -> None:
        super().__init__()
        if kind == "uniform":
            probs = torch.full((2**n_qubits,), 2.0**-n_qubits, dtype=torch.float64)
        elif kind == "fixed-random":
            e = -torch.log1p(-torch.rand(2**n_qubits, generator=generator, dtype=torch.float64))
            probs = e / e.sum()
        else:
            raise ValueError(f"Invalid kind {kind!r}. Must be 'uniform' or 'fixed-random'.")
        self.kind = kind
        self.register_buffer("probs", probs.to(dtype))

    def forward(self) -> Tensor:
        return self.probs

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, size={self.probs.numel()}"


class _NoEntanglement(Ansatz):
    def __init__(self, base: Ansatz) -> None:
        self.base = base
        self.name = f"{base.name}/no-entanglement"

    def weight_shape(self, n_qubits: int, depth: int) -> tuple[int, ...]:
        return self.base.weight_shape(n_qubits, depth)

    def operations(self, n_qubits: int, depth: int) -> list[Op]:
        ops = []
        for op in self.base.operations(n_qubits, depth):
            spec = GATES[op.gate]
            if spec.n_wires == 1:
                ops.append(op)
            elif spec.n_params:  # a controlled rotation becomes the rotation on its target
                ops.append(Op(op.gate[1:], (op.wires[1],), op.params))
            # fixed entanglers (CNOT, CZ) are dropped
        return ops

    def init_weights(self, weights: Tensor, generator: torch.Generator | None) -> None:
        self.base.init_weights(weights, generator)


def no_entanglement(ansatz: Ansatz) -> Ansatz:
    """``ansatz`` with the same angle layout and every entangling gate removed: fixed ones
    (CNOT, CZ) dropped, controlled rotations (CU3, CRY...) applied uncontrolled to their
    target. The state stays a product state."""
    return _NoEntanglement(ansatz)


def tt_count(n_qubits: int, bond: int) -> int:
    """Trainable scalars of a real tensor train over ``n_qubits`` bits with bond ``bond``."""
    if n_qubits == 1:
        return 2
    return 2 * (2 * bond + (n_qubits - 2) * bond * bond)


def _nearest(budget: int, count, start: int = 1) -> int:
    best, k = start, start
    while True:
        if abs(count(k) - budget) < abs(count(best) - budget):
            best = k
        if count(k) > budget:
            return best
        k += 1


def tt_bond_for_budget(n_qubits: int, budget: int) -> int:
    """The bond dimension whose tensor train's count is nearest ``budget`` (ties: smaller)."""
    return 1 if n_qubits == 1 else _nearest(budget, lambda d: tt_count(n_qubits, d))


def low_rank_for_budget(n_qubits: int, budget: int) -> int:
    """The rank whose ``U V^T`` count is nearest ``budget`` (ties: smaller)."""
    a, b = (n_qubits + 1) // 2, n_qubits // 2
    return _nearest(budget, lambda r: r * (2**a + 2**b))


class TensorTrainBorn(nn.Module):
    """``p_i = psi_i^2 / sum_j psi_j^2`` with ``psi_i = G_1[b_1] G_2[b_2] ... G_N[b_N]`` a
    real tensor train over the bits of ``i`` (MSB first); cores ``(D_{k-1}, 2, D_k)``,
    ``D_0 = D_N = 1``. ``2(2D + (N-2)D^2)`` trainable scalars (N >= 2)."""

    def __init__(self, n_qubits: int, bond: int, *, generator: torch.Generator, dtype=torch.float32) -> None:
        super().__init__()
        dims = [1] + [bond] * (n_qubits - 1) + [1]
        cores = []
        for k in range(n_qubits):
            core = torch.randn(dims[k], 2, dims[k + 1], generator=generator, dtype=torch.float64)
            cores.append(nn.Parameter((core / math.sqrt(dims[k])).to(dtype)))
        self.cores = nn.ParameterList(cores)
        self.bond = bond

    def forward(self) -> Tensor:
        psi = self.cores[0].reshape(2, -1)  # (2, D_1): rows are the first bit
        for core in self.cores[1:]:
            d_in, _, d_out = core.shape
            psi = (psi @ core.reshape(d_in, 2 * d_out)).reshape(-1, d_out)  # (2^k, D_k), MSB first
        psi = psi.reshape(-1)
        sq = psi * psi
        return sq / sq.sum()


class LowRankBorn(nn.Module):
    """``p = psi^2 / |psi|^2`` with ``psi = vec(U V^T)``, ``U (2^ceil(N/2), r)``,
    ``V (2^floor(N/2), r)``: ``r (2^ceil(N/2) + 2^floor(N/2))`` trainable scalars."""

    def __init__(self, n_qubits: int, rank: int, *, generator: torch.Generator, dtype=torch.float32) -> None:
        super().__init__()
        a, b = (n_qubits + 1) // 2, n_qubits // 2
        self.u = nn.Parameter(torch.randn(2**a, rank, generator=generator, dtype=torch.float64).to(dtype))
        self.v = nn.Parameter(torch.randn(2**b, rank, generator=generator, dtype=torch.float64).to(dtype))
        self.rank = rank

    def forward(self) -> Tensor:
        psi = (self.u @ self.v.T).reshape(-1)
        sq = psi * psi
        return sq / sq.sum()


def fwht(x: Tensor) -> Tensor:
    """Unnormalised fast Walsh-Hadamard transform along the last axis (length ``2^k``),
    ``O(n log n)``, differentiable.

    >>> fwht(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    tensor([1., 1., 1., 1.])
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {n}")
    h = 1
    lead = x.shape[:-1]
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack([a + b, a - b], dim=-2).reshape(*lead, n)
        h *= 2
    return x


class SubspaceGenerator(nn.Module):
    """``w = w0 + P z``: the intrinsic-dimension baseline, no circuit and no mapping.

    ``P = (1/D) S H G Pi H B`` (Fastfood): ``B``, ``G`` random +-1 diagonals, ``Pi`` a
    random permutation, ``H`` the ``D x D`` Hadamard transform (``D = 2^ceil(log2 M)``),
    ``S`` keeps the first M rows, and ``z`` (zero at the start) is padded to ``D``. The
    columns of ``P`` have norm about sqrt(M / D) <= 1; nothing but ``z`` is trained.
    """

    def __init__(self, w0: Tensor, budget: int, *, generator: torch.Generator, dtype=torch.float32) -> None:
        super().__init__()
        m = w0.numel()
        if not 1 <= budget <= m:
            raise ValueError(f"`budget` must be in 1..{m} (the number of weights), got {budget}")
        d = 1 << max(0, (m - 1).bit_length())
        self.n_generated, self.size = m, d
        sign = lambda: (torch.randint(0, 2, (d,), generator=generator) * 2 - 1).to(dtype)  # noqa: E731
        self.register_buffer("w0", w0.detach().reshape(-1).to(dtype).clone())
        self.register_buffer("b", sign())
        self.register_buffer("g", sign())
        self.register_buffer("perm", torch.randperm(d, generator=generator))
        self.z = nn.Parameter(torch.zeros(budget, dtype=dtype))

    def forward(self) -> Tensor:
        x = torch.zeros(self.size, dtype=self.z.dtype, device=self.z.device)
        x = torch.cat([self.z, x[self.z.numel():]])  # pad z to D
        y = fwht(self.b * x)[self.perm]
        y = fwht(self.g * y) / self.size
        return self.w0 + y[: self.n_generated]
