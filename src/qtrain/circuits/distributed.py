"""A distributed circuit: K independent sub-circuits whose distributions multiply.

A user with several small devices runs sub-circuit k on ``N_k`` qubits; nothing
entangles the parts, so the joint distribution over ``N = N_1 + ... + N_K`` bits is the
outer product ``p(i) = p_1(i_1) p_2(i_2) ... p_K(i_K)``, where ``i_1`` are the most
significant ``N_1`` bits of ``i`` (wires ``0 .. N_1 - 1``), and so on. Simulating it costs
the sum of the parts' ``2^(N_k)`` work plus one ``2^N`` product, instead of a ``2^N``
circuit — and it is less expressive: a product distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .ansatze import Ansatz
from .qnn import QNN

__all__ = ["DistributedQNN", "split_qubits"]


def split_qubits(n_qubits: int, parts: int | Sequence[int]) -> tuple[int, ...]:
    """Sizes ``(N_1, ..., N_K)`` of the sub-circuits: ``parts`` as given (they must sum
    to ``n_qubits``), or an int K for K near-equal parts, the larger first.

    >>> split_qubits(13, 3), split_qubits(13, (8, 5))
    ((5, 4, 4), (8, 5))

    Raises:
        ValueError: K < 1 or more parts than qubits; sizes that are not positive ints or
            do not sum to ``n_qubits``.
    """
    if isinstance(parts, int) and not isinstance(parts, bool):
        if not 1 <= parts <= n_qubits:
            raise ValueError(f"cannot split {n_qubits} qubits into {parts} sub-circuits (need 1 <= K <= {n_qubits})")
        base, extra = divmod(n_qubits, parts)
        return tuple(base + (k < extra) for k in range(parts))
    sizes = tuple(parts)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sub-circuit sizes must be positive ints, got {parts!r}")
    if sum(sizes) != n_qubits:
        raise ValueError(f"sub-circuit sizes {sizes} sum to {sum(sizes)}, but the circuit needs {n_qubits} qubits")
    return sizes


class DistributedQNN(nn.Module):
    """K independent :class:`~qtrain.QNN` s on ``sizes`` qubits; the call returns the
    outer product of their distributions, ``(2^N,)``.

    >>> import torch
    >>> dq = DistributedQNN((2, 1), depth=1, ansatz="ry-cnot-ring", seed=0)
    >>> p = dq().detach()
    >>> p.shape, round(float(p.sum()), 6), dq.n_angles
    (torch.Size([8]), 1.0, 3)

    Args:
        sizes: qubits per sub-circuit, most significant first.
        depth, ansatz: as for :class:`~qtrain.QNN`, shared by the parts.
        seed / generator: the parts' angles are drawn in order from one generator.
        sample_seed: part k samples its shots with ``sample_seed + k``.
        **options: every other :class:`~qtrain.QNN` keyword (dtype, shots, diff_method,
            noise...), applied to each part: each device is sampled on its own.
    """

    def __init__(self, sizes: Sequence[int], depth: int, ansatz: str | Ansatz = "u3-cu3-ring", *,
                 seed: int | None = None, generator: torch.Generator | None = None, sample_seed: int = 0,
                 **options) -> None:
        super().__init__()
        sizes = split_qubits(sum(sizes), sizes)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        self.parts = nn.ModuleList(
            QNN(n, depth, ansatz, generator=generator, sample_seed=sample_seed + k, **options)
            for k, n in enumerate(sizes)
        )
        self.sizes = sizes
        self.n_qubits = sum(sizes)
        self.depth = depth

    @property
    def n_angles(self) -> int:
        """Trainable angles of all the parts."""
        return sum(part.weights.numel() for part in self.parts)

    def forward(self) -> Tensor:
        probs = self.parts[0]()
        for part in self.parts[1:]:
            probs = (probs.unsqueeze(1) * part().unsqueeze(0)).reshape(-1)
        return probs

    def probabilities(self) -> Tensor:
        """The exact, noiseless joint distribution."""
        probs = self.parts[0].probabilities()
        for part in self.parts[1:]:
            probs = (probs.unsqueeze(1) * part.probabilities().unsqueeze(0)).reshape(-1)
        return probs

    def executions_per_step(self) -> int:
        """Circuit executions per training step, summed over the devices."""
        return sum(part.executions_per_step() for part in self.parts)

    def to_qasm(self) -> list[str]:
        """One OpenQASM 3 program per sub-circuit (one per device)."""
        return [part.to_qasm() for part in self.parts]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, n_qubits={self.n_qubits}, n_angles={self.n_angles}"
