"""Measurements: turn a state into what is read out.

Exact (``|amplitude|^2``) here; sampled estimates belong next to it, as a different
measurement of the same state, never as a flag on the gates.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["exact_probs"]


def exact_probs(state: Tensor) -> Tensor:
    """Born probabilities ``p_i = |<i|psi>|^2`` of a flat state, in its real dtype.

    Written as ``re^2 + im^2`` rather than ``abs()**2`` so the gradient stays finite at
    zero amplitudes.
    """
    if state.is_complex():
        return torch.view_as_real(state).pow(2).sum(-1)
    return state.pow(2)
