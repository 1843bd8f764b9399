"""Finite-shot estimates of a distribution, as a device reports them.

``sample_probs(p, shots, generator)`` draws ``shots`` basis states from ``p`` and
returns their frequencies: an unbiased estimate of ``p`` with variance
``p (1 - p) / shots`` per entry. With N qubits each ``p_i`` is about ``2^-N``, so resolving
them to relative precision ``eps`` takes about ``2^N / eps^2`` shots.

The counts are drawn exactly from the multinomial distribution by splitting the shots
down a binary tree over the index bits: at each level every node's count is divided
between its two halves by one binomial draw (vectorised over the level). That is N
levels and ``O(2^N)`` work whatever the number of shots, so 10^7 shots cost the same as 10.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_probs"]


def sample_probs(probs: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
    """Frequencies of ``shots`` draws from ``probs`` (same dtype and device; no gradient).

    Args:
        probs: ``(2^N,)`` non-negative, summing to 1.
        shots: number of measurements (>= 1, below 2^53).
        generator: a ``torch.Generator`` on ``probs``' device, for reproducible draws.

    >>> g = torch.Generator().manual_seed(0)
    >>> sample_probs(torch.tensor([0.5, 0.5, 0.0, 0.0]), 1000, g).sum()
    tensor(1.)
    """
    if not 1 <= shots < 2**53:
        raise ValueError(f"`shots` must be >= 1 (and below 2^53), got {shots}")
    p = probs.detach().to(torch.float64).clamp_min(0)
    n = p.numel()
    if n & (n - 1):
        raise ValueError(f"sample_probs needs 2^N probabilities, got {n}")
    counts = torch.full((1,), float(shots), dtype=torch.float64, device=p.device)
    mass = p.reshape(1, -1)
    while mass.shape[1] > 1:
        halves = mass.reshape(mass.shape[0], 2, -1)  # (nodes, 2, leaves per half)
        left, total = halves[:, 0].sum(1), halves.sum((1, 2))
        ratio = torch.where(total > 0, left / total, torch.zeros_like(total)).clamp(0, 1)
        go_left = torch.binomial(counts, ratio, generator=generator)
        counts = torch.stack([go_left, counts - go_left], 1).reshape(-1)  # children in index order
        mass = halves.reshape(-1, halves.shape[2])
    return (counts / shots).to(probs.dtype)
