"""Finite-shot estimates of a distribution, as a device reports them.

``sample_probs(p, shots, generator)`` draws ``shots`` basis states from ``p`` and
returns their frequencies: an unbiased estimate of ``p`` with variance
``p (1 - p) / shots`` per entry. With N qubits each ``p_i`` is about ``2^-N``, so resolving
them to relative precision ``eps`` takes about ``2^N / eps^2`` shots.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_probs", "CHUNK"]

CHUNK = 1 << 22  # draws per torch.multinomial call: bounds the index buffer to 32 MiB


def sample_probs(probs: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
    """Frequencies of ``shots`` draws from ``probs`` (same dtype and device; no gradient).

    Args:
        probs: ``(2^N,)`` non-negative, summing to 1 (renormalised internally for the draw
            only, so float32 round-off cannot raise).
        shots: number of measurements (>= 1).
        generator: a ``torch.Generator`` on ``probs``' device, for reproducible draws.

    >>> g = torch.Generator().manual_seed(0)
    >>> sample_probs(torch.tensor([0.5, 0.5, 0.0, 0.0]), 1000, g).sum()
    tensor(1.)
    """
    if shots < 1:
        raise ValueError(f"`shots` must be >= 1, got {shots}")
    p = probs.detach().clamp_min(0)
    counts = torch.zeros(p.numel(), dtype=torch.float64, device=p.device)
    left = shots
    while left:
        take = min(left, CHUNK)
        draws = torch.multinomial(p, take, replacement=True, generator=generator)
        counts += torch.bincount(draws, minlength=p.numel()).to(torch.float64)
        left -= take
    return (counts / shots).to(probs.dtype)
