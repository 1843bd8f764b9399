"""Noise models that act on the measured distribution, computed exactly.

- Global depolarizing with probability ``p`` after each of the ``L`` blocks: it commutes
  with every unitary, so the final distribution is
  ``q p + (1 - q) / 2^N`` with ``q = (1 - p)^L``.
- Readout bit flips: wire ``k`` reads the wrong bit with probability ``e_k``, independently:
  the distribution is multiplied, wire by wire, by ``[[1 - e_k, e_k], [e_k, 1 - e_k]]``.

Both are linear maps of the probabilities, applied before any sampling, exactly as a
device would hand them over.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (the doctests use it)
from torch import Tensor

__all__ = ["depolarize", "readout_flip"]


def depolarize(probs: Tensor, p: float, layers: int) -> Tensor:
    """Global depolarizing channel of strength ``p`` per layer, ``layers`` times.

    >>> depolarize(torch.tensor([1.0, 0.0, 0.0, 0.0]), 0.5, 1)
    tensor([0.6250, 0.1250, 0.1250, 0.1250])
    """
    if p == 0:
        return probs
    q = (1.0 - p) ** layers
    return q * probs + (1.0 - q) / probs.numel()


def readout_flip(probs: Tensor, error: float | Sequence[float], n_qubits: int) -> Tensor:
    """Independent bit-flip readout errors (one probability for all wires, or one per wire).

    >>> readout_flip(torch.tensor([1.0, 0.0, 0.0, 0.0]), [0.1, 0.0], 2)
    tensor([0.9000, 0.0000, 0.1000, 0.0000])
    """
    errors = [float(error)] * n_qubits if isinstance(error, (int, float)) else [float(e) for e in error]
    if len(errors) != n_qubits:
        raise ValueError(f"readout error needs 1 or {n_qubits} probabilities, got {len(errors)}")
    for k, e in enumerate(errors):
        if e == 0:
            continue
        view = probs.reshape(2**k, 2, 2 ** (n_qubits - 1 - k))  # (A, 2, B): wire k in the middle
        flipped = view.flip(1)
        probs = ((1 - e) * view + e * flipped).reshape(-1)
    return probs
